#!/usr/bin/env bash
# The main job: a local 3-node peercache cluster (static peers, demo source with 20 ms
# latency) that you can curl. It walks through a few requests, then keeps the cluster
# running until Ctrl-C. `./scripts/demo.sh --once` stops after the walk-through.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v curl >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "== installing curl (apt-get)"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq curl >/dev/null
  else
    echo "error: curl is missing and apt-get is not available; install curl with your package manager" >&2
    exit 1
  fi
fi

echo "== building peercache (release)"
cargo build --release --quiet --bin peercache
BIN=target/release/peercache

GRPC=(127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003)
HTTP=(127.0.0.1:8001 127.0.0.1:8002 127.0.0.1:8003)
PEERS=$(IFS=,; echo "${GRPC[*]}")
LOGS=$(mktemp -d)
PIDS=()
stop() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT INT TERM

for i in 0 1 2; do
  RUST_LOG=${RUST_LOG:-info} "$BIN" serve --grpc-addr "${GRPC[$i]}" --http-addr "${HTTP[$i]}" \
    --peers "$PEERS" --group demo:64MiB --ttl 300s --source demo:20 >"$LOGS/node$((i + 1)).log" 2>&1 &
  PIDS+=($!)
done
for h in "${HTTP[@]}"; do
  for _ in $(seq 100); do curl -sf "http://$h/healthz" >/dev/null && break; sleep 0.1; done
  curl -sf "http://$h/healthz" >/dev/null || { echo "node $h did not start; logs in $LOGS" >&2; exit 1; }
done
echo "== 3 nodes up: HTTP on ${HTTP[*]}, gRPC on ${GRPC[*]}; logs in $LOGS"

run() {
  echo
  echo "\$ $*"
  "$@"
  echo
}
run curl -s "http://127.0.0.1:8001/api?group=demo&key=user:42"
run curl -s -o /dev/null -w "second read: %{http_code} in %{time_total}s\n" "http://127.0.0.1:8002/api?group=demo&key=user:42"
run curl -s -X PUT --data-binary "hello" "http://127.0.0.1:8003/v1/groups/demo/keys/greeting?ttl=60s"
run curl -s "http://127.0.0.1:8001/v1/groups/demo/keys/greeting"
run curl -s -X DELETE "http://127.0.0.1:8002/v1/groups/demo/keys/greeting"
run curl -s "http://127.0.0.1:8001/v1/ring"
run curl -s "http://127.0.0.1:8001/v1/stats"
echo "(/metrics has the same counters and latency histograms in Prometheus text)"

if [ "${1:-}" = "--once" ]; then
  exit 0
fi
echo
echo "== cluster running; curl it from another terminal, e.g."
echo "   curl 'http://127.0.0.1:8002/api?group=demo&key=anything'"
echo "   Ctrl-C stops all three nodes"
wait
