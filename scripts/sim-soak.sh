#!/usr/bin/env bash
# Soaks the simulated scenarios for HOURS (fractional, e.g. 0.1) on every core:
#   scripts/sim-soak.sh HOURS [FIRST_SEED]
# Builds the simulation tests once (release), then runs chunks of seeds in parallel, one
# scenario and SOAK_CHUNK (default 20) consecutive seeds per job, SOAK_JOBS (default
# nproc) jobs at a time, taking the scenarios in turn so they advance evenly. No chunk
# starts after the deadline; running chunks finish. Every seed is checked as in CI
# (SIM_KEEP_GOING=1: a failure does not stop the chunk); the first seed of each chunk is
# replayed for determinism, and every seed of every 10th chunk (SIM_DETERMINISM=1).
#
# Scenarios are the test binary's `scenarios::*` tests (`--list`), less `regression_*`.
#
# Files (the soak resumes where it stopped):
#   reports/sim-soak.tsv           ledger, a line per finished chunk: date, commit,
#                                  scenario, first seed, seeds, failed seeds, wall
#                                  seconds, replayed (first | all)
#   reports/sim-soak-failures.md   each failing seed: scenario, seed, the first violation,
#                                  the replay command
#   reports/sim.md                 its "Soak" section, rebuilt from the ledger
#                                  (scripts/sim-soak-report.py)
#   target/sim-soak/               the output of failing chunks
# Seeds go on from the ledger: per scenario, one past the highest seed run at this commit
# (1 if none), unless FIRST_SEED is given. The commit is `git rev-parse --short HEAD`,
# with "+dirty" when tracked files outside reports/ have uncommitted changes.
#   SOAK_CHUNK=<seeds>, SOAK_JOBS=<jobs>  chunk size and parallelism
#   SOAK_LAST=<seed>                     stop each scenario once it has run this seed
#                                        (the soak ends early when all have)
#   SOAK_BIN=<test binary>               soak that binary instead of building (it is
#                                        taken to be of the commit checked out)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

usage() { echo "usage: $0 HOURS [FIRST_SEED]   (e.g. $0 0.1; $0 8 1)" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
hours=$1
first_seed=${2:-}
[[ $hours =~ ^[0-9]*\.?[0-9]+$ ]] || usage
[ -z "$first_seed" ] || [[ $first_seed =~ ^[0-9]+$ ]] || usage
chunk=${SOAK_CHUNK:-20}
jobs=${SOAK_JOBS:-$(nproc)}
ledger=reports/sim-soak.tsv
failures=reports/sim-soak-failures.md
logs=${CARGO_TARGET_DIR:-target}/sim-soak
[ -n "${SOAK_BIN:-}" ] || need_build_deps
need python3 python3
need flock util-linux

commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- . ':(exclude)reports' || commit="$commit+dirty"

if [ -n "${SOAK_BIN:-}" ]; then
  bin=$SOAK_BIN
else
  echo "== building the simulation tests (release)"
  bin=$(cargo test --release --features sim --test sim --no-run --message-format=json \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line) if line.startswith("{") else {}
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "sim" and m.get("executable"):
        print(m["executable"])')
fi
[ -x "$bin" ] || { echo "error: no sim test binary found" >&2; exit 1; }
# A private copy: a build elsewhere in this target directory cannot swap it mid-soak.
mkdir -p "$logs"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$bin" "$work/sim"
bin="$work/sim"

mapfile -t scenarios < <("$bin" --list 2>/dev/null \
  | sed -n 's/^scenarios::\([a-z0-9_]*\): test$/\1/p' | grep -v '^regression_')
[ ${#scenarios[@]} -gt 0 ] || { echo "error: no scenarios in $bin --list" >&2; exit 1; }

[ -f "$ledger" ] || printf 'date\tcommit\tscenario\tfirst\tseeds\tfailures\twall_s\treplayed\n' > "$ledger"
[ -f "$failures" ] || cat > "$failures" <<'EOF'
# Simulation soak: failing seeds

Appended by `scripts/sim-soak.sh`: a seed per entry, with the first violation its check
reported and the command that replays it. The chunk's full output was kept under
target/sim-soak/ on the machine that ran it.

EOF

# The next seed of each scenario.
declare -A next
for s in "${scenarios[@]}"; do
  if [ -n "$first_seed" ]; then
    next[$s]=$first_seed
  else
    next[$s]=$(awk -F'\t' -v c="$commit" -v s="$s" '
      NR > 1 && $2 == c && $3 == s && $5 > 0 && $4 + $5 - 1 > max { max = $4 + $5 - 1 }
      END { print max + 1 }' "$ledger")
  fi
done

# Runs one chunk and records it: ledger line, failures, kept output.
run_chunk() {
  local s=$1 from=$2 n=$3 replayed=$4
  local out="$work/$s-$from.log" started=$EPOCHREALTIME status=0
  local det=()
  [ "$replayed" = all ] && det=(SIM_DETERMINISM=1)
  env SIM_FIRST="$from" SIM_SEEDS="$n" SIM_KEEP_GOING=1 "${det[@]}" SIM_LOG= \
    "$bin" --exact "scenarios::$s" --test-threads=1 --nocapture >"$out" 2>&1 || status=$?
  local wall
  wall=$(python3 -c "print(f'{$EPOCHREALTIME - $started:.1f}')")
  # Per failing seed: "seed<TAB>first violation<TAB>replay command"; then "ran<TAB>count".
  python3 scripts/sim-soak-report.py chunk "$out" "$s" "$from" "$n" "$status" >"$out.tsv"
  local ran nfailed
  ran=$(awk -F'\t' '$1 == "ran" { print $2 }' "$out.tsv")
  nfailed=$(grep -vc '^ran' "$out.tsv" || true)
  (
    flock 9
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$commit" "$s" "$from" \
      "$ran" "$nfailed" "$wall" "$replayed" >>"$ledger"
    if [ "$nfailed" -gt 0 ]; then
      cp "$out" "$logs/$s-$from.log"
      grep -v '^ran' "$out.tsv" | while IFS=$'\t' read -r seed what replay; do
        printf -- '- %s, commit %s: `scenarios::%s` seed %s: %s\n  `%s` (output: %s)\n' \
          "$(date -u +%FT%TZ)" "$commit" "$s" "$seed" "$what" "$replay" "$logs/$s-$from.log" >>"$failures"
        echo "FAILED: scenario=$s seed=$seed: $what" >&2
      done
    fi
  ) 9>>"$ledger.lock"
  echo "   $s seeds $from..$((from + n - 1)): ran $ran, failed $nfailed, ${wall} s${det:+ (all replayed)}"
}

started=$(date +%s)
deadline=$(python3 -c "print(int($started + $hours * 3600))")
echo "== soak: ${#scenarios[@]} scenarios, $chunk seeds a chunk, $jobs jobs, until $(date -d "@$deadline" +%T), commit $commit"
printf '   start: '
for s in "${scenarios[@]}"; do printf '%s@%s ' "$s" "${next[$s]}"; done
echo
ledger_start=$(wc -l <"$ledger")
k=0 running=0
while [ "$(date +%s)" -lt "$deadline" ]; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
    continue
  fi
  s=${scenarios[k % ${#scenarios[@]}]}
  if [ -n "${SOAK_LAST:-}" ] && [ "${next[$s]}" -gt "$SOAK_LAST" ]; then
    k=$((k + 1))
    left=0
    for t in "${scenarios[@]}"; do [ "${next[$t]}" -le "$SOAK_LAST" ] && left=1; done
    [ "$left" = 1 ] || break
    continue
  fi
  replayed=first
  [ $((k % 10)) -eq 9 ] && replayed=all
  n=$chunk
  [ -z "${SOAK_LAST:-}" ] || [ $((next[$s] + n - 1)) -le "$SOAK_LAST" ] || n=$((SOAK_LAST - next[$s] + 1))
  run_chunk "$s" "${next[$s]}" "$n" "$replayed" &
  next[$s]=$((next[$s] + n))
  k=$((k + 1)) running=$((running + 1))
done
echo "== no more chunks to start (deadline or SOAK_LAST); waiting for $running running chunk(s)"
wait
rm -f "$ledger.lock"

echo "== this soak ($(($(date +%s) - started)) s wall, commit $commit)"
tail -n +"$((ledger_start + 1))" "$ledger" | awk -F'\t' '
  { seeds[$3] += $5; failed[$3] += $6; wall[$3] += $7; if (!($3 in seen)) { seen[$3] = 1; order[n++] = $3 } }
  END {
    printf "   %-22s %8s %8s %18s\n", "scenario", "seeds", "failures", "seeds/hour/core"
    for (i = 0; i < n; i++) { s = order[i]
      printf "   %-22s %8d %8d %18.0f\n", s, seeds[s], failed[s], (wall[s] > 0 ? seeds[s] * 3600 / wall[s] : 0) }
  }'
python3 scripts/sim-soak-report.py section "$ledger" reports/sim.md "${scenarios[@]}"
failed_now=$(tail -n +"$((ledger_start + 1))" "$ledger" | awk -F'\t' '{ f += $6 } END { print f + 0 }')
if [ "$failed_now" -gt 0 ]; then
  echo "== $failed_now failing seed(s): see $failures"
  exit 1
fi
