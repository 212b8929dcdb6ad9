#!/usr/bin/env bash
# Quick hit-latency measurement over HTTP on loopback (wrk, one connection, then 16),
# for a single node and for a 3-node cluster: a hit on the key's owner, and a hit that
# takes a peer hop (hot copies off). Writes reports/hit-latency.md. The full load
# generator (loadgen/) supersedes this.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-5s}

. scripts/lib.sh
need wrk wrk
need_build_deps
cargo build --release --quiet --bin peercache
BIN=target/release/peercache
PIDS=()
stop() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
}
trap stop EXIT INT TERM

start() { # start N: nodes on 127.0.0.1:1710i (gRPC) and 1810i (HTTP), hot copies off
  local n=$1 peers="" i
  for i in $(seq "$n"); do peers+="${peers:+,}127.0.0.1:1710$i"; done
  for i in $(seq "$n"); do
    RUST_LOG=warn "$BIN" serve --grpc-addr "127.0.0.1:1710$i" --http-addr "127.0.0.1:1810$i" \
      --peers "$peers" --group demo:64MiB --source demo --hot-fill 0 --hot-second-fetch false >/dev/null 2>&1 &
    PIDS+=($!)
  done
  for i in $(seq "$n"); do
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:1810$i/healthz" >/dev/null && break; sleep 0.1; done
  done
}

peer_loads() { curl -s "http://127.0.0.1:18101/v1/stats" | grep -o '"peer_loads":[0-9]*' | cut -d: -f2; }

# A key node 1 owns (its read causes no peer load) and one it does not.
pick_keys() {
  LOCAL="" REMOTE=""
  for k in $(seq 0 50); do
    local before after
    before=$(peer_loads)
    curl -sf "http://127.0.0.1:18101/v1/groups/demo/keys/k$k" >/dev/null
    after=$(peer_loads)
    if [ "$before" = "$after" ]; then LOCAL=${LOCAL:-k$k}; else REMOTE=${REMOTE:-k$k}; fi
    [ -n "$LOCAL" ] && [ -n "$REMOTE" ] && return
  done
}

measure() { # measure NAME URL CONNECTIONS
  local out p50 p99 rps
  out=$(wrk -t1 -c"$3" -d"$DURATION" --latency "$2")
  p50=$(awk '$1=="50%"{print $2}' <<<"$out")
  p99=$(awk '$1=="99%"{print $2}' <<<"$out")
  rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
  echo "| $1 | $3 | $p50 | $p99 | $rps |" | tee -a "$TABLE"
}

TABLE=$(mktemp)
start 1
LOCAL=k0
curl -sf "http://127.0.0.1:18101/v1/groups/demo/keys/$LOCAL" >/dev/null
measure "1 node, hit" "http://127.0.0.1:18101/v1/groups/demo/keys/$LOCAL" 1
measure "1 node, hit" "http://127.0.0.1:18101/v1/groups/demo/keys/$LOCAL" 16
stop
start 3
pick_keys
measure "3 nodes, hit on the owner" "http://127.0.0.1:18101/v1/groups/demo/keys/$LOCAL" 1
measure "3 nodes, hit on the owner" "http://127.0.0.1:18101/v1/groups/demo/keys/$LOCAL" 16
measure "3 nodes, hit via a peer (gRPC hop)" "http://127.0.0.1:18101/v1/groups/demo/keys/$REMOTE" 1
measure "3 nodes, hit via a peer (gRPC hop)" "http://127.0.0.1:18101/v1/groups/demo/keys/$REMOTE" 16
stop

{
  echo "# Hit latency, HTTP GET on loopback"
  echo
  echo "Command: \`DURATION=$DURATION ./scripts/hit-latency.sh\` (wrk -t1, one key, warmed; hot copies off)"
  echo
  echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), commit $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty'). wrk and the nodes share the cores."
  echo
  echo "| case | connections | P50 | P99 | requests/s |"
  echo "|---|---|---|---|---|"
  cat "$TABLE"
} >reports/hit-latency.md
echo "wrote reports/hit-latency.md"
