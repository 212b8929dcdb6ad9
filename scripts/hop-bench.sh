#!/usr/bin/env bash
# The peer hop under load (issue 19): wrk -t2 -c50 over HTTP on loopback, uniform over
# 10,000 keys of 100-byte values, hot copies off, in three set-ups measured in turn, RUNS
# times (default 3):
#   local    one node: every get a local hit
#   alone    three nodes, every get sent to node 1: two thirds of them a gRPC hop to the
#            key's owner, each its own call (--peer-batch 1, as before GetMany)
#   batched  the same with the default coalescing: gets to one owner that are ready at
#            the same moment go as one GetMany
# and, for the batched set-up, how many keys went per peer call. Writes
# reports/hop-bench.md (the medians and every run). wrk and the nodes share the cores.
# BATCHED_FLAGS adds serve flags to the batched set-up (e.g. "--peer-calls 0"); NODE_FLAGS
# adds serve flags to every node of every set-up (e.g. "--worker-threads 1").
# BASE=<git revision> also builds that revision (build_base in lib.sh) and runs its
# local and batched set-ups in every run too (local-base, batched-base): two builds
# compared on the same machine in the same minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need wrk wrk
need curl curl
need_build_deps
DURATION=${DURATION:-10s}
RUNS=${RUNS:-3}
cargo build --release --quiet --bin peercache
BIN=target/release/peercache
work=$(mktemp -d)
bench_procs
if [ -n "${BASE:-}" ]; then
  BASE_BIN=$work/base
  build_base "$BASE" peercache "$BASE_BIN" --bin peercache
fi

# Keys as loadgen names them: key: and eight digits.
cat >"$work/put.lua" <<'EOF'
wrk.method = "PUT"
wrk.body = string.rep("v", 100)
local n = 0
request = function()
  local path = string.format("/v1/groups/demo/keys/key:%08d", n % 10000)
  n = n + 1
  return wrk.format(nil, path)
end
EOF
cat >"$work/get.lua" <<'EOF'
local seeded = false
request = function()
  if not seeded then math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16)); seeded = true end
  return wrk.format(nil, string.format("/v1/groups/demo/keys/key:%08d", math.random(0, 9999)))
end
EOF

start() { # start N [serve flags...]: nodes on 127.0.0.1:1720i (gRPC), 1820i (HTTP)
  local n=$1 peers="" i
  shift
  for i in $(seq "$n"); do port_free "http://127.0.0.1:1820$i"; done
  for i in $(seq "$n"); do peers+="${peers:+,}127.0.0.1:1720$i"; done
  for i in $(seq "$n"); do
    RUST_LOG=warn "${RUN_BIN:-$BIN}" serve --grpc-addr "127.0.0.1:1720$i" --http-addr "127.0.0.1:1820$i" \
      --peers "$peers" --group demo:64MiB --source demo --hot-fill 0 --hot-second-fetch false \
      --hot-key-window 0 ${NODE_FLAGS:-} "$@" >"$work/node$i.log" 2>&1 &
    PIDS+=($!)
  done
  for i in $(seq "$n"); do
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:1820$i/healthz" >/dev/null && break; sleep 0.1; done
  done
  # Every key written once (through node 1, so to its owner), then a warm-up.
  wrk -t1 -c4 -d4s -s "$work/put.lua" http://127.0.0.1:18201 >/dev/null
  wrk -t2 -c50 -d2s -s "$work/get.lua" http://127.0.0.1:18201 >/dev/null
}

metric() { # metric NAME-AND-LABELS: its value at node 1, 0 if absent
  curl -s http://127.0.0.1:18201/metrics | awk -v m="$1" '$1 == m { v = $2 } END { print v + 0 }'
}
calls() {
  local get many keys
  get=$(metric 'peercache_peer_rpc_seconds_count{rpc="get",outcome="ok"}')
  many=$(metric 'peercache_peer_rpc_seconds_count{rpc="get_many",outcome="ok"}')
  keys=$(metric 'peercache_peer_batch_keys_sum')
  echo "$get $many $keys"
}

# CPU time (user + system, in clock ticks) of node 1 and of the other nodes together.
ticks() {
  local first=0 rest=0 i t
  for i in "${!PIDS[@]}"; do
    t=$(awk '{ print $14 + $15 }' "/proc/${PIDS[$i]}/stat")
    if [ "$i" = 0 ]; then first=$t; else rest=$((rest + t)); fi
  done
  echo "$first $rest"
}

measure() { # measure SETUP RUN: one wrk run against node 1, appended to $work/runs
  local before after out cpu0 cpu1
  before=$(calls)
  cpu0=$(ticks)
  out=$(wrk -t2 -c50 -d"$DURATION" --latency -s "$work/get.lua" http://127.0.0.1:18201)
  cpu1=$(ticks)
  after=$(calls)
  awk -v setup="$1" -v run="$2" -v before="$before" -v after="$after" -v hz="$(getconf CLK_TCK)" \
    -v cpu0="$cpu0" -v cpu1="$cpu1" '
    $1 == "50%" { p50 = $2 } $1 == "99%" { p99 = $2 } /Requests\/sec/ { rps = $2 }
    /requests in/ { total = $1 }
    /Non-2xx/ { bad += $NF } /Socket errors/ { bad += 1 }
    END {
      split(before, b, " "); split(after, a, " ")
      get = a[1] - b[1]; many = a[2] - b[2]; keys = a[3] - b[3]
      per = (get + many) > 0 ? (get + keys) / (get + many) : 0
      split(cpu0, c0, " "); split(cpu1, c1, " ")
      # CPU µs of node 1 per request, and of the owners per key they were asked for.
      entry = (c1[1] - c0[1]) / hz * 1e6 / total
      hopped = get + keys
      owners = hopped > 0 ? (c1[2] - c0[2]) / hz * 1e6 / hopped : 0
      printf "%s %s %.0f %s %s %d %d %.2f %d %.1f %.1f\n", setup, run, rps, p50, p99, get, many, per, bad, entry, owners
    }' <<<"$out" | tee -a "$work/runs"
}

echo "setup run rps p50 p99 gets get_manys keys_per_call errors node1_cpu_us_per_request owners_cpu_us_per_key"
for run in $(seq "$RUNS"); do
  start 1; measure local "$run"; stop_procs
  start 3 --peer-batch 1 --peer-stream false; measure alone "$run"; stop_procs
  # shellcheck disable=SC2086
  start 3 ${BATCHED_FLAGS:-}; measure batched "$run"; stop_procs
  if [ -n "${BASE:-}" ]; then
    RUN_BIN=$BASE_BIN start 1; measure local-base "$run"; stop_procs
    # shellcheck disable=SC2086
    RUN_BIN=$BASE_BIN start 3 ${BATCHED_FLAGS:-}; measure batched-base "$run"; stop_procs
  fi
done

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { awk -v s="$1" -v c="$2" '$1 == s { print $c }' "$work/runs"; }
# wrk prints latencies with units; in microseconds for the medians.
us() { awk '{ v = $1; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
  f = (u == "us") ? 1 : (u == "ms") ? 1000 : (u == "s") ? 1000000 : 0; print v * f }'; }
local_rps=$(col local 3 | median)
{
  echo "# The peer hop under load: one node's local hits vs gets through one node of three"
  echo
  echo "wrk -t2 -c50 over HTTP on loopback, uniform over 10,000 keys of 100-byte values"
  echo "(written once through node 1, then a 2 s warm-up), hot copies off"
  echo "(\`--hot-fill 0 --hot-second-fetch false --hot-key-window 0\`), $DURATION per run;"
  echo "wrk and the nodes share the machine's cores. Set-ups in turn, each run on fresh nodes:"
  echo
  echo "- **local**: one node, every get a hit in its own cache;"
  echo "- **alone**: three nodes, every get sent to node 1, two thirds of them a gRPC hop to"
  echo "  the key's owner, each in a call of its own (\`--peer-batch 1\`, as before GetMany);"
  echo "- **batched**: the same with the default \`--peer-batch 64\`: gets to one owner that"
  echo "  are ready at the same moment go as one GetMany (src/grpc/batch.rs)."
  if [ -n "${BASE:-}" ]; then
    echo "- **local-base**, **batched-base**: local and batched with the build of $BASE; × local is against this build's local."
  fi
  echo
  echo "- Command: \`${BASE:+BASE=$BASE }${BATCHED_FLAGS:+BATCHED_FLAGS=\"$BATCHED_FLAGS\" }DURATION=$DURATION RUNS=$RUNS ./scripts/hop-bench.sh\`"
  dirty=$(git diff --quiet HEAD -- src Cargo.toml || echo " with uncommitted changes")
  echo "- Commit: $(git rev-parse --short HEAD)${dirty}"
  echo "- Machine: $(nproc) cores, $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
  echo
  echo "Medians of $RUNS runs:"
  echo
  echo "| set-up | requests/s | × local | P50 µs | P99 µs | keys per peer call | node 1 CPU µs per request | owners' CPU µs per key asked |"
  echo "|---|---|---|---|---|---|---|---|"
  for s in local alone batched ${BASE:+local-base batched-base}; do
    rps=$(col "$s" 3 | median) p50=$(col "$s" 4 | us | median) p99=$(col "$s" 5 | us | median)
    per=$(col "$s" 8 | median) entry=$(col "$s" 10 | median) owners=$(col "$s" 11 | median)
    awk -v s="$s" -v r="$rps" -v l="$local_rps" -v p50="$p50" -v p99="$p99" -v per="$per" \
      -v entry="$entry" -v owners="$owners" \
      'BEGIN { local = (s ~ /^local/)
        printf "| %s | %.0f | %.2f× | %.0f | %.0f | %s | %.1f | %s |\n", s, r, r / l, p50, p99,
          local ? "—" : per, entry, local ? "—" : sprintf("%.1f", owners) }'
  done
  echo
  echo "CPU is user + system time from /proc over the measured run: node 1's per request it"
  echo "answered, the two owners' together per key node 1 asked them for."
  echo
  echo "Every run (gets and GetManys: node 1's calls to its peers during the run):"
  echo
  echo "| set-up | run | requests/s | P50 | P99 | gets | GetManys | keys per call | errors | node 1 CPU µs/request | owners' CPU µs/key |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  awk '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 }' "$work/runs"
} >reports/hop-bench.md
echo "wrote reports/hop-bench.md"
