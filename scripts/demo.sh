#!/usr/bin/env bash
# The main job: a local 3-node peercache cluster (demo source with 20 ms latency) that
# you can curl. It walks through a few requests, then keeps the cluster running until
# Ctrl-C.
#   --etcd   membership from etcd: starts an etcd of its own on 127.0.0.1:2379 (data in a
#            temp dir; installs etcd-server with apt-get when missing), registers the
#            nodes as node1..node3 under /peercache/demo/, and shows a node leaving and
#            coming back. Without it the nodes get a static peer list.
#   --once   stops after the walk-through.
set -euo pipefail
cd "$(dirname "$0")/.."

ETCD=""; ONCE=""
for arg in "$@"; do
  case "$arg" in
    --etcd) ETCD=1 ;;
    --once) ONCE=1 ;;
    *) echo "usage: $0 [--etcd] [--once]" >&2; exit 2 ;;
  esac
done

. scripts/lib.sh
need curl curl
need_build_deps
[ -n "$ETCD" ] && need_etcd

echo "== building peercache (release)"
cargo build --release --quiet --bin peercache
BIN=target/release/peercache

GRPC=(127.0.0.1:7001 127.0.0.1:7002 127.0.0.1:7003)
HTTP=(127.0.0.1:8001 127.0.0.1:8002 127.0.0.1:8003)
# Redis clients: redis-cli -p 6381 GET user:42
RESP=(127.0.0.1:6381 127.0.0.1:6382 127.0.0.1:6383)
PEERS=$(IFS=,; echo "${GRPC[*]}")
LOGS=$(mktemp -d)
PIDS=()
stop() {
  # The nodes first, so they can leave etcd gracefully; then etcd.
  for i in 1 2 3; do [ -n "${PIDS[$i]:-}" ] && kill "${PIDS[$i]}" 2>/dev/null || true; done
  for i in 1 2 3; do [ -n "${PIDS[$i]:-}" ] && wait "${PIDS[$i]}" 2>/dev/null || true; done
  [ -n "${PIDS[0]:-}" ] && kill "${PIDS[0]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop EXIT INT TERM

if [ -n "$ETCD" ]; then
  "${ETCD_BIN:-etcd}" --name demo --data-dir "$LOGS/etcd-data" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster demo=http://127.0.0.1:2380 --logger zap --log-outputs stderr \
    >"$LOGS/etcd.log" 2>&1 &
  PIDS[0]=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:2379/health >/dev/null && break; sleep 0.1; done
  curl -sf http://127.0.0.1:2379/health >/dev/null || { echo "etcd did not start; log in $LOGS/etcd.log" >&2; exit 1; }
  echo "== etcd up on 127.0.0.1:2379 (data in $LOGS/etcd-data)"
fi

# start_node I: node I+1 in the background, logging to $LOGS/nodeN.log.
start_node() {
  local i=$1 membership
  if [ -n "$ETCD" ]; then
    membership=(--etcd http://127.0.0.1:2379 --etcd-prefix /peercache/demo/ --node-id "node$((i + 1))")
  else
    membership=(--peers "$PEERS")
  fi
  RUST_LOG=${RUST_LOG:-info} "$BIN" serve --grpc-addr "${GRPC[$i]}" --http-addr "${HTTP[$i]}" --resp-addr "${RESP[$i]}" \
    "${membership[@]}" --group demo:64MiB --ttl 300s --source demo:20 >>"$LOGS/node$((i + 1)).log" 2>&1 &
  PIDS[$((i + 1))]=$!
}
# until_up PORT: waits (up to 10 s) until the node on PORT answers /healthz.
until_up() {
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/healthz" >/dev/null && return 0; sleep 0.1; done
  echo "the node on port $1 did not start; logs in $LOGS" >&2
  exit 1
}
for i in 0 1 2; do start_node "$i"; done
for port in 8001 8002 8003; do until_up "$port"; done
echo "== 3 nodes up: HTTP on ${HTTP[*]}, gRPC on ${GRPC[*]}, Redis protocol on ${RESP[*]}; logs in $LOGS"

# The member records in etcd, through etcd's JSON gateway (keys are base64).
etcdctl_get() {
  curl -s http://127.0.0.1:2379/v3/kv/range \
    -d "{\"key\":\"$(printf /peercache/demo/ | base64)\",\"range_end\":\"$(printf /peercache/demo0 | base64)\"}"
}

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

if [ -n "$ETCD" ]; then
  echo
  echo "== node3 stops (SIGTERM): it deletes its etcd record, and the others' rings lose it"
  kill "${PIDS[3]}"; wait "${PIDS[3]}" 2>/dev/null || true
  sleep 0.5
  run curl -s "http://127.0.0.1:8001/v1/ring"
  echo "== node3 starts again and registers under a new lease"
  start_node 2
  until_up 8003
  run curl -s "http://127.0.0.1:8001/v1/ring"
  run etcdctl_get
fi

if [ -n "$ONCE" ]; then
  exit 0
fi
echo
echo "== cluster running; curl it from another terminal, e.g."
echo "   curl 'http://127.0.0.1:8002/api?group=demo&key=anything'"
echo "   Ctrl-C stops everything this script started"
wait
