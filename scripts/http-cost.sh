#!/usr/bin/env bash
# What a local hit costs a node, against the HTTP stack's floor, one command: CPU time
# (user + system, from /proc/<pid>/stat) per request of one server under a closed loop
# of 32 requests (loadgen on one thread, 10,000 keys of 100 B), for
#   ceiling  loadgen ceiling-server: axum on tokio answering a constant, nothing else
#   node     one peercache node (--group demo:64MiB --source demo), every get a hit
#   base     with BASE=<git revision>, that revision's node the same way (build_base
#            in lib.sh)
# taking turns in each of RUNS runs (default 5), DURATION seconds each (default 6s). Writes
# reports/http-cost.md: medians, the ratio to the ceiling, and every run.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need curl curl
need_build_deps
DURATION=${DURATION:-6s}
RUNS=${RUNS:-5}
BASE=${BASE:-}
target="${CARGO_TARGET_DIR:-target}"
work=$(mktemp -d)
bench_procs
cargo build --release --quiet --bin peercache --bin loadgen
cp "$target/release/peercache" "$work/node"
cp "$target/release/loadgen" "$work/loadgen"
BIN=$work/node
LG=$work/loadgen
if [ -n "$BASE" ]; then build_base "$BASE" peercache "$work/base" --bin peercache; fi
url=http://127.0.0.1:18301

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# measure SETUP RUN: the closed loop against the server in PIDS[0]; appends
# "setup run qps cpu-us-per-request" to $work/runs.
measure() {
  local before after out qps
  before=$(ticks "${PIDS[0]}")
  out=$("$LG" run --target "$url" --group demo --keys 10000 --threads 1 --concurrency 32 \
    --warmup 0s --duration "$DURATION" 2>&1)
  after=$(ticks "${PIDS[0]}")
  qps=$(awk '$1 == "qps" && $2 == "p50" { getline; print $1 }' <<<"$out")
  awk -v s="$1" -v r="$2" -v q="$qps" -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" \
    -v d="${DURATION%s}" 'BEGIN { printf "%s %s %s %.2f\n", s, r, q, t / hz * 1e6 / (q * d) }' |
    tee -a "$work/runs"
}

# node SETUP RUN BINARY: one node, its keys written, then measured.
node() {
  port_free "$url"
  RUST_LOG=warn "$3" serve --grpc-addr 127.0.0.1:17301 --http-addr 127.0.0.1:18301 \
    --peers 127.0.0.1:17301 --group demo:64MiB --source demo >"$work/node.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do curl -sf "$url/healthz" >/dev/null && break; sleep 0.1; done
  "$LG" run --target "$url" --group demo --keys 10000 --mix get=0,set=100 --concurrency 16 \
    --warmup 0s --duration 3s >/dev/null 2>&1
  measure "$1" "$2"
  stop_procs
}

echo "setup run qps cpu-us-per-request"
for run in $(seq "$RUNS"); do
  port_free "$url"
  "$LG" ceiling-server --addr 127.0.0.1:18301 >"$work/ceiling.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do curl -s "$url/" >/dev/null && break; sleep 0.1; done
  measure ceiling "$run"
  stop_procs
  node node "$run" "$BIN"
  if [ -n "$BASE" ]; then node base "$run" "$work/base"; fi
done

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { awk -v s="$1" -v c="$2" '$1 == s { print $c }' "$work/runs"; }
ceiling=$(col ceiling 4 | median)
{
  echo "# What a local hit costs a node, against the HTTP stack's floor"
  echo
  echo "CPU time (user + system, \`/proc/<pid>/stat\`) per request of one server under a"
  echo "closed loop of 32 gets (loadgen on one thread, its own HTTP/1.1 connections,"
  echo "10,000 keys of 100 B, $DURATION), the set-ups taking turns in each run:"
  echo
  echo "- **ceiling**: \`loadgen ceiling-server\`, axum on tokio answering a constant;"
  echo "- **node**: one peercache node, \`--group demo:64MiB --source demo\`, keys written first, every get a hit;"
  if [ -n "$BASE" ]; then echo "- **base**: the same node at $(git rev-parse --short "$BASE")."; fi
  echo
  echo "- Command: \`${BASE:+BASE=$BASE }RUNS=$RUNS DURATION=$DURATION ./scripts/http-cost.sh\`"
  dirty=$(git diff --quiet HEAD -- src Cargo.toml loadgen || echo " with uncommitted changes")
  echo "- Commit: $(git rev-parse --short HEAD)${dirty}"
  echo "- Machine: $(nproc) cores, $(uname -sr)"
  echo
  echo "Medians of $RUNS runs (loadgen shares the cores, so requests/s is loadgen's as much as the server's):"
  echo
  echo "| set-up | requests/s | CPU µs per request | against the ceiling |"
  echo "|---|---|---|---|"
  for s in ceiling node base; do
    [ -z "$(col "$s" 4)" ] && continue
    cpu=$(col "$s" 4 | median)
    echo "| $s | $(col "$s" 3 | median) | $cpu | $(awk -v a="$cpu" -v b="$ceiling" 'BEGIN { printf "%.2f×", a / b }') |"
  done
  echo
  echo "Every run:"
  echo
  echo "| set-up | run | requests/s | CPU µs per request |"
  echo "|---|---|---|---|"
  awk '{ printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }' "$work/runs"
} >reports/http-cost.md
echo "wrote reports/http-cost.md"
