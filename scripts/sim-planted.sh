#!/usr/bin/env bash
# Plants each known bug in the node, one at a time (SIM_BUG, compiled in only with the
# `sim` feature: src/buggify.rs), runs every scenario over CI's seeds (SEEDS, default 5)
# in a release build, and the pinned regression seeds (`regression_*`, one seed each),
# and writes sim/mutants.md: which scenarios caught each bug, with how many seeds, and
# the first violation. A bug nothing catches fails the script.
#
#   scripts/sim-planted.sh [SEEDS]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_build_deps
seeds="${1:-5}"
jobs="$(nproc)"

bin="$(cargo test --release --features sim --test sim --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "sim":
        print(m["executable"])')"
[ -x "$bin" ] || { echo "error: no sim test binary built" >&2; exit 1; }
tests="$("$bin" --list 2>/dev/null | sed -n 's/^scenarios::\([a-z_]*\): test$/\1/p')"
scenarios="$(grep -v '^regression_' <<<"$tests")"
regressions="$(grep '^regression_' <<<"$tests")"
bugs="$(sed -n 's/^ *Bug::[A-Za-z]* => "\([a-z_]*\)",$/\1/p' src/buggify.rs)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

run_one() { # bug scenario (or "standalone": every test outside scenarios::)
  if [ "$2" = standalone ]; then
    SIM_BUG="$1" SIM_WALL_BUDGET=120 \
      "$bin" --skip scenarios:: --test-threads=1 >"$out/$1.$2.log" 2>&1 || true
    return
  fi
  SIM_BUG="$1" SIM_KEEP_GOING=1 SIM_SEEDS="$seeds" SIM_WALL_BUDGET=120 \
    "$bin" --exact "scenarios::$2" --test-threads=1 >"$out/$1.$2.log" 2>&1 || true
}
export -f run_one
export bin seeds out
started=$(date +%s)
for b in $bugs; do for s in $scenarios $regressions standalone; do echo "$b $s"; done; done |
  xargs -P "$jobs" -n 2 bash -c 'run_one "$0" "$1"'
elapsed=$(( $(date +%s) - started ))

missed=0
{
  echo "# Planted bugs: is each caught by the simulator alone?"
  echo
  echo "Command: \`scripts/sim-planted.sh $seeds\` (release build; each bug planted alone with"
  echo "\`SIM_BUG=<name>\`, every scenario over seeds 1..=$seeds, CI's count). Commit"
  echo "$(git rev-parse --short HEAD), $(nproc) cores, ${elapsed} s wall in all. The bugs live in"
  echo "src/buggify.rs and src/group/ behind \`buggify::planted\`, which is \`false\` without the"
  echo "\`sim\` feature: release builds do not contain them."
  echo
  echo "A cell is the number of seeds (of $seeds) that failed; \"pinned\" counts the pinned"
  echo "regression seeds (\`scenarios::regression_*\`, one seed each) that failed;"
  echo "\"standalone\" the other simulated tests that failed (\`races::\`, \`staleness::\`,"
  echo "\`cluster::\`, ...: one seed each, their own assertions); the last column is the first"
  echo "violation or failed assertion seen."
  echo
  echo "The bugs (src/buggify.rs):"
  echo
  python3 - <<'PY'
import re
src = open("src/buggify.rs").read()
body = src[src.index("pub enum Bug {"):src.index("impl Bug {")]
for doc, name in re.findall(r"((?:\s*///[^\n]*\n)+)\s*([A-Z][A-Za-z]+),", body):
    text = " ".join(l.strip()[3:].strip() for l in doc.strip().splitlines())
    snake = re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()
    print(f"- `{snake}`: {text}")
PY
  echo
  printf '| bug |'; for s in $scenarios; do printf ' %s |' "$s"; done; printf ' pinned | standalone | caught by | first violation |\n'
  printf '|---|'; for s in $scenarios; do printf -- '---|'; done; printf -- '---|---|---|---|\n'
  for b in $bugs; do
    printf '| `%s` |' "$b"
    catchers=0
    first=""
    for s in $scenarios; do
      n="$(grep -c ' FAILED: ' "$out/$b.$s.log" || true)"
      printf ' %s |' "$n"
      if [ "$n" -gt 0 ]; then
        catchers=$((catchers + 1))
        [ -n "$first" ] || first="$(grep -m1 '^\[' "$out/$b.$s.log" | cut -c1-140 | sed 's/|/\\|/g')"
      fi
    done
    pinned=0
    for s in $regressions; do
      if grep -q ' FAILED: ' "$out/$b.$s.log"; then
        pinned=$((pinned + 1))
        [ -n "$first" ] || first="$(grep -m1 '^\[' "$out/$b.$s.log" | cut -c1-140 | sed 's/|/\\|/g')"
      fi
    done
    printf ' %s |' "$pinned"
    [ "$pinned" -eq 0 ] || catchers=$((catchers + 1))
    alone="$(grep -c '^test .* FAILED$' "$out/$b.standalone.log" || true)"
    printf ' %s |' "$alone"
    if [ "$alone" -gt 0 ]; then
      catchers=$((catchers + 1))
      [ -n "$first" ] || first="$(grep -m1 -E '^\[|panicked at|assertion' "$out/$b.standalone.log" | cut -c1-140 | sed 's/|/\\|/g')"
    fi
    if [ "$catchers" -eq 0 ]; then missed=$((missed + 1)); first="NOT CAUGHT"; fi
    printf ' %s test(s) | %s |\n' "$catchers" "$first"
  done
} > sim/mutants.md
echo "wrote sim/mutants.md"
if [ "$missed" -gt 0 ]; then
  echo "error: $missed planted bug(s) caught by no scenario" >&2
  exit 1
fi
