#!/usr/bin/env bash
# Mutation testing with cargo-mutants over the request path's logic (the files and the
# test command are in .cargo/mutants.toml, so plain `cargo mutants` does the same), within
# a wall-clock budget, then reports/mutants.md from whatever finished.
#
#   scripts/mutants.sh [MINUTES] [cargo-mutants arguments...]
#
# MINUTES (default 60): when it runs out, cargo-mutants is interrupted and the report
# covers the mutants tested so far (the rest are counted as not reached).
# SHARD=k/n: test only the k-th of n shards (`--shard k/n`), e.g. one per machine.
# OUT (default target/mutants): where cargo-mutants writes mutants.out/.
# EARLIER="dir ...": OUT directories of earlier runs at the same source (other shards,
#   other files, or a run before new tests) merged into the report; this run's outcome
#   wins for a mutant both tested.
# REPORT_ONLY=1: run nothing, rewrite the report from OUT (and EARLIER).
# Extra arguments go to cargo-mutants, e.g. `--file src/ring.rs` or `--in-place` (no
# copy of the tree: faster, but do not edit the tree meanwhile).
#
# Missed mutants are explained in .cargo/mutants-explained.txt: a `mutant:` line (the
# name as cargo-mutants prints it, without line and column) and a `why:` line.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
need_build_deps

MINUTES="${1:-60}"
shift || true
if ! [[ $MINUTES =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/mutants.sh [MINUTES (a whole number, at least 1)] [cargo-mutants arguments...]" >&2
  exit 2
fi
OUT="${OUT:-target/mutants}"
REPORT=reports/mutants.md
EXPLAINED=.cargo/mutants-explained.txt

if ! cargo mutants --version >/dev/null 2>&1; then
  echo "== installing cargo-mutants"
  cargo install cargo-mutants --locked
fi
# .cargo/config.toml sets `--cfg tokio_unstable`; a RUSTFLAGS from the environment
# would replace it (see scripts/test.sh).
if [ -n "${RUSTFLAGS:-}" ]; then
  export RUSTFLAGS="$RUSTFLAGS --cfg tokio_unstable"
fi

args=(--output "$OUT" "$@")
# One build at a time by default (a mutant's build already uses every core); --in-place
# implies one.
case " $* " in *" --in-place "*) ;; *) args+=(--jobs "${JOBS:-1}") ;; esac
[ -n "${SHARD:-}" ] && args+=(--shard "$SHARD")

mkdir -p "$OUT" reports
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src tests || echo ' (with uncommitted changes)')
status=0
if [ -z "${REPORT_ONLY:-}" ]; then
  cargo mutants --list "${args[@]}" >"$OUT/listed.txt"
  echo "== $(wc -l <"$OUT/listed.txt") mutants; budget ${MINUTES} min"
  start=$(date +%s)
  timeout --signal=INT --kill-after=60 "${MINUTES}m" cargo mutants "${args[@]}" || status=$?
  elapsed=$(( ($(date +%s) - start) / 60 ))
else
  status=report
  elapsed=0
fi
case $status in
  report) ended="report rewritten from $OUT" ;;
  0 | 2 | 3) ended="finished" ;; # 2: some mutants missed, 3: some timed out
  124 | 137) ended="stopped by the ${MINUTES}-minute budget" ;;
  *) ended="ended with status $status (interrupted, or see $OUT/mutants.out/debug.log)" ;;
esac

# The arguments as one would type them: single quotes where the shell needs them.
quote() {
  local a out=()
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./=:,+-]+$ ]]; then out+=("$a"); else out+=("'$a'"); fi
  done
  echo "${out[*]}"
}

# Outcomes as "outcome<TAB>mutant", earlier runs first so this run wins.
outcomes() {
  local dir
  for dir in "$@"; do
    for o in caught missed timeout unviable; do
      [ -f "$dir/mutants.out/$o.txt" ] || continue
      sed "s/^/$o\t/" "$dir/mutants.out/$o.txt"
    done
  done | awk -F'\t' '{ last[$2] = $1; if (!($2 in seen)) { seen[$2] = 1; order[++n] = $2 } }
    END { for (i = 1; i <= n; i++) print last[order[i]] "\t" order[i] }'
}
# One line per run, kept with its output, so a merged report lists every run.
if [ -z "${REPORT_ONLY:-}" ]; then
  tested=$(cat "$OUT"/mutants.out/{caught,missed,timeout,unviable}.txt 2>/dev/null | wc -l)
  echo "- \`${SHARD:+SHARD=$SHARD }scripts/mutants.sh $MINUTES${*:+ $(quote "$@")}\` at $commit," \
    "$(date -u '+%Y-%m-%d %H:%M UTC'): $tested of $(wc -l <"$OUT/listed.txt") mutants" \
    "tested, $ended after $elapsed min." >"$OUT/run.md"
fi
read -r -a earlier <<<"${EARLIER:-}"
outcomes "${earlier[@]}" "$OUT" >"$OUT/merged.tsv"
for dir in "${earlier[@]}" "$OUT"; do cat "$dir/listed.txt"; done | sort -u >"$OUT/listed-names.txt"

{
  echo "# Mutation testing"
  echo
  echo "cargo-mutants $(cargo mutants --version | awk '{print $2}'), $(nproc) cores, one build at a time."
  echo "Runs merged here (a later run's outcome wins for a mutant tested twice):"
  echo
  for dir in "${earlier[@]}" "$OUT"; do
    if [ -f "$dir/run.md" ]; then cat "$dir/run.md"; else echo "- the output in $dir"; fi
  done
  echo
  echo "Files, exclusions and the test command: [.cargo/mutants.toml](../.cargo/mutants.toml), or"
  echo "[.cargo/mutants-group.toml](../.cargo/mutants-group.toml) (the group's tests only) where a run names it."
  echo
  echo "Caught: a test failed. Missed: every test passed with the code mutated. Unviable: it"
  echo "does not build. Timeout: the tests hung (counted as caught by cargo-mutants)."
  echo "Not reached: listed but not tested within the budget (or in this shard)."
  echo
  echo "| file | mutants | caught | missed | unviable | timeout | not reached |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  awk -F'\t' '
    FILENAME == ARGV[1] { split($0, p, ":"); listed[p[1]]++; files[p[1]] = 1; next }
    { split($2, p, ":"); n[p[1], $1]++; done[p[1]]++; files[p[1]] = 1 }
    END {
      for (f in files) {
        row = sprintf("| %s | %d | %d | %d | %d | %d | %d |", f, listed[f], n[f, "caught"],
          n[f, "missed"], n[f, "unviable"], n[f, "timeout"], listed[f] - done[f])
        print row
      }
    }' "$OUT/listed-names.txt" "$OUT/merged.tsv" | sort
  awk -F'\t' '
    FILENAME == ARGV[1] { split($0, p, ":"); listed++; next }
    { n[$1]++; done++ }
    END { printf "| **total** | %d | %d | %d | %d | %d | %d |\n", listed, n["caught"],
      n["missed"], n["unviable"], n["timeout"], listed - done }' \
    "$OUT/listed-names.txt" "$OUT/merged.tsv"
  echo
  echo "## Missed mutants"
  echo
  if ! grep -q '^missed' "$OUT/merged.tsv"; then
    echo "None."
  fi
  awk -F'\t' '
    FILENAME == ARGV[1] {
      if (sub(/^mutant: /, "")) { m = $0 } else if (sub(/^why: /, "")) { why[m] = $0 }
      next
    }
    $1 == "missed" {
      name = $2
      sub(/:[0-9]+:[0-9]+: /, ": ", name)
      d = (name in why) ? why[name] : "**not explained yet**: needs a test or a reason"
      printf "- `%s`  \n  %s\n", $2, d
    }' "${EXPLAINED}" "$OUT/merged.tsv"
} >"$REPORT"
echo "== wrote $REPORT ($ended after $elapsed min)"
