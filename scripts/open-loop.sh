#!/usr/bin/env bash
# Remote hits under an open loop (issue 19's latency goal), one command: three nodes on
# loopback with hot copies off, every get sent by loadgen to a node that does not own
# its key (--route remote: each a peer hop), 10,000 keys of 100 B. In each of RUNS
# runs (default 3), on fresh nodes:
#   max    closed loop, 32 requests in flight: the maximum rate
#   1/8 1/4 3/8  open loop at those fractions of the maximum: where the P99 crosses 1 ms
#   half   open loop at half of that maximum (--rate), sends evenly spaced
#   half-poisson  the same rate, sends as a Poisson process's arrivals (--arrivals poisson)
#   2000   open loop at 2,000 requests/s
#   floor-max floor-1/4 floor-half   the same against the floor: three HTTP servers on
#          the nodes' stack that answer each get through the next one (a hop, no cache)
# Writes reports/open-loop-run.md (the medians and every run). loadgen and the nodes
# share the machine's cores. NODE_FLAGS adds serve flags to every node
# (e.g. "--peer-stream false"). LG_THREADS (default 1) is loadgen's --threads: on
# cores it shares with the nodes, one thread costs them the least per request.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need curl curl
need_build_deps
DURATION=${DURATION:-10s}
RUNS=${RUNS:-3}
LG_THREADS=${LG_THREADS:-1}
cargo build --release --quiet --bin peercache --bin loadgen
BIN=target/release/peercache
LG=target/release/loadgen
work=$(mktemp -d)
bench_procs

start() {
  local peers=127.0.0.1:17201,127.0.0.1:17202,127.0.0.1:17203 i
  for i in 1 2 3; do port_free "http://127.0.0.1:1820$i"; done
  for i in 1 2 3; do
    # shellcheck disable=SC2086
    RUST_LOG=warn "$BIN" serve --grpc-addr "127.0.0.1:1720$i" --http-addr "127.0.0.1:1820$i" \
      --peers "$peers" --group demo:64MiB --source demo --hot-fill 0 --hot-second-fetch false \
      --hot-key-window 0 ${NODE_FLAGS:-} >"$work/node$i.log" 2>&1 &
    PIDS+=($!)
  done
  for i in 1 2 3; do
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:1820$i/healthz" >/dev/null && break; sleep 0.1; done
  done
  # Every key written once, through nodes that do not own it.
  "$LG" run --target "$targets" --group demo --keys 10000 --route remote --mix get=0,set=100 \
    --concurrency 16 --warmup 0s --duration 5s >/dev/null 2>&1
}

# load SETUP RUN [loadgen flags...]: one measured loadgen run against $targets with
# the workload in $shape, its summary appended to $work/runs as: setup run qps p50 p99
# p99.9 errors timer-late-p99
load() {
  local setup=$1 run=$2 out
  shift 2
  # shellcheck disable=SC2086
  out=$("$LG" run --target "$targets" $shape --keys 10000 \
    --threads "$LG_THREADS" --duration "$DURATION" "$@" 2>&1)
  awk -v setup="$setup" -v run="$run" '
    $1 == "qps" && $2 == "p50" { getline; row = setup " " run " " $1 " " $2 " " $4 " " $5 " " $8 }
    /timer woke late/ { late = $11; sub(/,$/, "", late) }
    END { print row, (late == "" ? "-" : late) }' <<<"$out" |
    tee -a "$work/runs"
}

# The floor: three servers with nothing but the nodes' HTTP stack (axum on tokio, as
# the nodes), each answering a get by first getting the key from the next in a ring on
# kept HTTP/1.1 connections (loadgen ceiling-server --forward), then a constant: every
# get a hop, no cache, no ring, no peer protocol.
floor() {
  local i
  for i in 1 2 3; do port_free "http://127.0.0.1:1930$i"; done
  for i in 1 2 3; do
    "$LG" ceiling-server --addr "127.0.0.1:1930$i" --forward "http://127.0.0.1:1930$((i % 3 + 1))" \
      >"$work/floor$i.log" 2>&1 &
    PIDS+=($!)
  done
  for i in 1 2 3; do
    for _ in $(seq 100); do curl -s "http://127.0.0.1:1930$i/" >/dev/null && break; sleep 0.1; done
  done
}

echo "setup run qps p50 p99 p99.9 errors timer-late-p99"
for run in $(seq "$RUNS"); do
  targets=http://127.0.0.1:18201,http://127.0.0.1:18202,http://127.0.0.1:18203
  shape="--group demo --route remote"
  start
  load max "$run" --concurrency 32
  max=$(awk -v run="$run" '$1 == "max" && $2 == run { print $3 }' "$work/runs")
  load 1/8 "$run" --rate $((max / 8))
  load 1/4 "$run" --rate $((max / 4))
  load 3/8 "$run" --rate $((max * 3 / 8))
  load half "$run" --rate $((max / 2))
  load half-poisson "$run" --rate $((max / 2)) --arrivals poisson
  load 2000 "$run" --rate 2000
  stop_procs
  targets=http://127.0.0.1:19301,http://127.0.0.1:19302,http://127.0.0.1:19303
  shape="--group hop"
  floor
  load floor-max "$run" --concurrency 32
  max=$(awk -v run="$run" '$1 == "floor-max" && $2 == run { print $3 }' "$work/runs")
  load floor-1/4 "$run" --rate $((max / 4))
  load floor-half "$run" --rate $((max / 2))
  stop_procs
done

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { awk -v s="$1" -v c="$2" '$1 == s { print $c }' "$work/runs"; }
# loadgen prints latencies with units (µs, ms, s); in microseconds for the medians.
us() { awk '{ v = $1; u = v; sub(/^[0-9.]+/, "", u); sub(/[^0-9.]+$/, "", v)
  f = (u == "ms") ? 1000 : (u == "s") ? 1000000 : 1; print v * f }'; }
{
  echo "# Remote hits under an open loop: P99 at half the maximum rate"
  echo
  echo "Three nodes on loopback (\`--group demo:64MiB --source demo --hot-fill 0"
  echo "--hot-second-fetch false --hot-key-window 0${NODE_FLAGS:+ $NODE_FLAGS}\`), every get sent by loadgen to a"
  echo "node that does not own its key (\`loadgen run --route remote\`: each a peer hop),"
  echo "10,000 keys of 100 B written first; loadgen and the nodes share the machine's"
  echo "cores (loadgen on $LG_THREADS thread(s), \`--threads $LG_THREADS\`, its plain-HTTP requests on"
  echo "hyper connections it keeps). In each run, on fresh nodes, $DURATION each after"
  echo "loadgen's warm-up:"
  echo
  echo "- **max**: closed loop, 32 requests in flight (\`--concurrency 32\`): the maximum rate;"
  echo "- **1/8, 1/4, 3/8**: open loop at those fractions of that run's maximum;"
  echo "- **half**: open loop at half of that run's maximum (\`--rate\`), one send every"
  echo "  1/rate seconds (a timerfd), counted from that time, or from the timer's wake-up"
  echo "  when it woke late (that lateness, loadgen's own, is in the last column);"
  echo "- **half-poisson**: the same rate with the gaps of a Poisson process"
  echo "  (\`--arrivals poisson\`): independent clients, burstier;"
  echo "- **2000**: open loop at 2,000 requests/s."
  echo "- **floor-max, floor-1/4, floor-half**: the same loadgen against the floor, after"
  echo "  the nodes stop: three servers with nothing but the nodes' HTTP stack (axum on"
  echo "  tokio), each answering a get by first getting the key from the next in a ring on"
  echo "  kept HTTP/1.1 connections (\`loadgen ceiling-server --forward\`): every get a hop,"
  echo "  no cache, no peer protocol. Its closed-loop maximum, and the open loop at a"
  echo "  quarter and half of that."
  echo
  echo "- Command: \`${NODE_FLAGS:+NODE_FLAGS=\"$NODE_FLAGS\" }LG_THREADS=$LG_THREADS DURATION=$DURATION RUNS=$RUNS ./scripts/open-loop.sh\`"
  dirty=$(git diff --quiet HEAD -- src Cargo.toml loadgen || echo " with uncommitted changes")
  echo "- Commit: $(git rev-parse --short HEAD)${dirty}"
  echo "- Machine: $(nproc) cores, $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
  echo
  echo "Medians of $RUNS runs (issue 19's goal: P99 at half the maximum ≤ 1,000 µs):"
  echo
  echo "| set-up | requests/s | P50 µs | P99 µs | P99.9 µs | loadgen's timer late, P99 µs (not counted) |"
  echo "|---|---|---|---|---|---|"
  for s in max 1/8 1/4 3/8 half half-poisson 2000 floor-max floor-1/4 floor-half; do
    late=-
    [ "${s#floor-}" != max ] && late=$(col "$s" 8 | us | median)
    echo "| $s | $(col "$s" 3 | median) | $(col "$s" 4 | us | median) | $(col "$s" 5 | us | median) | $(col "$s" 6 | us | median) | $late |"
  done
  echo
  echo "Every run:"
  echo
  echo "| set-up | run | requests/s | P50 | P99 | P99.9 | errors | timer late P99 |"
  echo "|---|---|---|---|---|---|---|---|"
  awk '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8 }' "$work/runs"
} >reports/open-loop-run.md
echo "wrote reports/open-loop-run.md"
