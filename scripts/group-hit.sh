#!/usr/bin/env bash
# In-process cost of a Group::get hit, alone and on a node that is one of three members
# (examples/group_hit.rs: one thread, 10,000 keys, 5 M gets each), RUNS times (default
# 5); writes reports/group-hit.md with every run and the median of the ratios.
#   BASE=<git revision>  also builds that revision's example (build_base in lib.sh)
#                        and runs the two alternately, so both
#                        are measured in one session on the same machine.
# Run it on a quiet machine: other load moves single runs by tens of percent. The report
# gives the median of the per-run ratios and the ratio of the fastest runs (the least
# disturbed by other load), and, since instruction counts do not move with other load,
# instructions per get under valgrind's callgrind (installed with apt-get if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_build_deps
need valgrind valgrind
RUNS=${RUNS:-5}
target="${CARGO_TARGET_DIR:-target}"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

cargo build --release --quiet --example group_hit
cp "$target/release/examples/group_hit" "$out/head"
bins=(head)
if [ -n "${BASE:-}" ]; then
  build_base "$BASE" examples/group_hit "$out/base" --example group_hit
  bins=(base head)
fi

for run in $(seq "$RUNS"); do
  for b in "${bins[@]}"; do
    "$out/$b" | awk -v b="$b" -v run="$run" '
      /^alone:/ { alone = $2 }
      /^one of three nodes:/ { node = $5 }
      END { printf "%s %s %s %s %.3f\n", b, run, alone, node, node / alone }' >>"$out/runs"
    tail -1 "$out/runs"
  done
done

# Instructions per get of each phase: callgrind dumps its counts after each return of
# ns_per_hit (alone, then one of three); each dump also holds the 10,000 loads and the
# set-up before it, about 1% of the count.
for b in "${bins[@]}"; do
  valgrind --tool=callgrind --callgrind-out-file="$out/cg-$b" \
    --dump-after='group_hit::ns_per_hit::{{closure}}' "$out/$b" >/dev/null 2>&1 &
done
wait
gets=$(grep -o 'const GETS: usize = [0-9_]*' examples/group_hit.rs | grep -o '[0-9_]*$' | tr -d _)
instructions() { grep '^totals:' "$out/cg-$1.$2" | awk -v g="$gets" '{ printf "%.0f", $2 / g }'; }

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
least() { sort -n | head -1; }
{
  echo "# Group::get hit: alone vs one of three members"
  echo
  echo "\`examples/group_hit.rs\` in one thread: 10,000 keys this node owns, 5 M hits on a group"
  echo "alone and on a group whose node is one of three members (in-process peers, no"
  echo "sockets), where each main-cache hit also checks that this node still owns the key."
  echo
  echo "- Command: \`${BASE:+BASE=$BASE }RUNS=$RUNS scripts/group-hit.sh\`"
  dirty=$(git diff --quiet HEAD -- src examples Cargo.toml || echo " with uncommitted changes")
  echo "- Commit: $(git rev-parse --short HEAD)${dirty}${BASE:+ (head) and $(git rev-parse --short "$BASE") (base)}"
  echo "- Machine: $(nproc) cores, $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
  echo
  echo "Instructions per get (callgrind; the same on every run of the same binary):"
  echo
  echo "| build | alone | one of three | ratio |"
  echo "|---|---|---|---|"
  for b in "${bins[@]}"; do
    a=$(instructions "$b" 1) n=$(instructions "$b" 2)
    awk -v b="$b" -v a="$a" -v n="$n" 'BEGIN { printf "| %s | %d | %d | %.2f× |\n", b, a, n, n / a }'
  done
  echo
  echo "Time per get, runs alternating between builds:"
  echo
  echo "| build | run | alone ns/get | one of three ns/get | ratio |"
  echo "|---|---|---|---|---|"
  awk '{ printf "| %s | %s | %s | %s | %.2f× |\n", $1, $2, $3, $4, $5 }' "$out/runs"
  echo
  for b in "${bins[@]}"; do
    ratio=$(awk -v b="$b" '$1 == b { print $5 }' "$out/runs" | median)
    alone=$(awk -v b="$b" '$1 == b { print $3 }' "$out/runs" | median)
    node=$(awk -v b="$b" '$1 == b { print $4 }' "$out/runs" | median)
    fast_alone=$(awk -v b="$b" '$1 == b { print $3 }' "$out/runs" | least)
    fast_node=$(awk -v b="$b" '$1 == b { print $4 }' "$out/runs" | least)
    fast=$(awk -v a="$fast_alone" -v n="$fast_node" 'BEGIN { printf "%.2f", n / a }')
    echo "- **$b**: median ratio ${ratio}× (medians: alone ${alone} ns, one of three ${node} ns);"
    echo "  fastest runs: alone ${fast_alone} ns, one of three ${fast_node} ns, ratio ${fast}×"
  done
} >reports/group-hit.md
cat reports/group-hit.md
