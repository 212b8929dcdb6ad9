#!/usr/bin/env bash
# Side by side with redis-benchmark, in one run on this machine: redis-server (Debian, no
# persistence) against one peercache node and a 3-node peercache cluster, each preloaded
# with 10,000 100-byte values under redis-benchmark's own key names, then
#   redis-benchmark -t get -n N -r 10000 -d 100   at -c 50, at -c 8, and at -c 50 -P 16,
# REPS times each (default 3) taking turns, medians into reports/resp.md (QPS, P50, P99,
# and each QPS and P99 as a ratio to redis-server's). The cluster runs with hot copies
# off, twice: through one node (two keys in three are a peer hop), and through all
# three at once (three redis-benchmark processes, each a third of the connections and
# requests; QPS summed, P50 and P99 the worst of the three).
#
#   scripts/resp-bench.sh              # N=500000, REPS=3
#   N=100000 REPS=1 scripts/resp-bench.sh
#
# With perf on the PATH it also records where one node's time goes under the -c 50
# load (perf record -e cpu-clock -g, 5 s) and adds the split and the busiest functions.
# Installs redis-server and redis-tools (apt-get) when missing; builds peercache in
# release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
need_build_deps
need redis-server redis-server
need redis-benchmark redis-tools
need redis-cli redis-tools

N="${N:-500000}"
REPS="${REPS:-3}"
report="${RESP_REPORT:-reports/resp.md}"
target="${CARGO_TARGET_DIR:-target}"
echo "== building peercache (release)"
cargo build --release --quiet --bin peercache
BIN="$target/release/peercache"

load_start="$(cut -d' ' -f1-3 /proc/loadavg)"
work="$(mktemp -d)"
PIDS=()
stop() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap stop EXIT INT TERM

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
until_pong() {
  for _ in $(seq 200); do
    [ "$(redis-cli -p "$1" PING 2>/dev/null)" = "PONG" ] && return 0
    sleep 0.05
  done
  echo "nothing answers PING on port $1; logs in $work" >&2
  exit 1
}

# The keys redis-benchmark -r 10000 reads (key:%012d), 100-byte values, through --pipe.
preload() {
  python3 - "$@" >"$work/preload.resp" <<'EOF'
v = b"x" * 100
out = []
for i in range(10000):
    k = b"key:%012d" % i
    out.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$100\r\n%s\r\n" % (len(k), k, v))
import sys
sys.stdout.buffer.write(b"".join(out))
EOF
  redis-cli -p "$1" --pipe <"$work/preload.resp" | grep -q "errors: 0, replies: 10000" ||
    { echo "preloading port $1 failed" >&2; exit 1; }
}

# redis-server, as Debian ships it, without persistence.
redis_port=$(port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  --daemonize no --dir "$work" >"$work/redis.log" 2>&1 &
PIDS+=($!)
until_pong "$redis_port"
preload "$redis_port"

# One node, a pure cache (every key set by the preload; a TTL longer than the run, so
# every GET is a hit).
single_port=$(port)
"$BIN" serve --group bench --source none --ttl 24h --grpc-addr "127.0.0.1:$(port)" \
  --http-addr "127.0.0.1:$(port)" --resp-addr "127.0.0.1:$single_port" >"$work/single.log" 2>&1 &
PIDS+=($!)
until_pong "$single_port"
preload "$single_port"

# The same with one worker thread, as redis-server runs its commands on one thread: on
# a machine whose cores the client shares, a second worker mostly adds wake-ups.
single1_port=$(port)
"$BIN" serve --group bench --source none --ttl 24h --worker-threads 1 --grpc-addr "127.0.0.1:$(port)" \
  --http-addr "127.0.0.1:$(port)" --resp-addr "127.0.0.1:$single1_port" >"$work/single1.log" 2>&1 &
PIDS+=($!)
until_pong "$single1_port"
preload "$single1_port"

# Three nodes, static peers, hot copies off.
grpc=("127.0.0.1:$(port)" "127.0.0.1:$(port)" "127.0.0.1:$(port)")
peers="$(IFS=,; echo "${grpc[*]}")"
cluster_ports=()
for i in 0 1 2; do
  p=$(port)
  cluster_ports+=("$p")
  "$BIN" serve --group bench --source none --ttl 24h --grpc-addr "${grpc[$i]}" --peers "$peers" \
    --http-addr "127.0.0.1:$(port)" --resp-addr "127.0.0.1:$p" \
    --hot-fill 0 --hot-second-fetch false >"$work/node$i.log" 2>&1 &
  PIDS+=($!)
done
for p in "${cluster_ports[@]}"; do until_pong "$p"; done
sleep 1 # the members join
preload "${cluster_ports[0]}"
held=0
for p in "${cluster_ports[@]}"; do held=$((held + $(redis-cli -p "$p" DBSIZE))); done
[ "$held" -eq 10000 ] || { echo "the cluster holds $held of 10000 keys" >&2; exit 1; }

# bench PORT CLIENTS REQUESTS [-P 16]: "qps p50 p99" from redis-benchmark's CSV.
bench() {
  local port=$1 clients=$2 n=$3
  shift 3
  redis-benchmark -p "$port" -t get -n "$n" -r 10000 -d 100 -c "$clients" "$@" --csv |
    awk -F'"' '$2 == "GET" { print $4, $10, $14 }'
}
# bench_all CLIENTS [-P 16]: the three cluster nodes at once.
bench_all() {
  local clients=$1 each_c each_n
  shift
  each_c=$(((clients + 2) / 3))
  each_n=$((N / 3))
  for i in 0 1 2; do
    bench "${cluster_ports[$i]}" "$each_c" "$each_n" "$@" >"$work/all$i.out" &
  done
  wait
  cat "$work"/all{0,1,2}.out |
    awk '{ q += $1; if ($2 > p50) p50 = $2; if ($3 > p99) p99 = $3 } END { printf "%.2f %s %s\n", q, p50, p99 }'
}

systems=(redis single single-1t cluster-one cluster-all)
loads=("c50" "c8" "c50-P16")
declare -A results
for rep in $(seq "$REPS"); do
  for load in "${loads[@]}"; do
    case "$load" in
      c50) args=(50) ;;
      c8) args=(8) ;;
      c50-P16) args=(50 -P 16) ;;
    esac
    for sys in "${systems[@]}"; do
      case "$sys" in
        redis) out=$(bench "$redis_port" "${args[0]}" "$N" "${args[@]:1}") ;;
        single) out=$(bench "$single_port" "${args[0]}" "$N" "${args[@]:1}") ;;
        single-1t) out=$(bench "$single1_port" "${args[0]}" "$N" "${args[@]:1}") ;;
        cluster-one) out=$(bench "${cluster_ports[0]}" "${args[0]}" "$N" "${args[@]:1}") ;;
        cluster-all) out=$(bench_all "${args[@]}") ;;
      esac
      [ -n "$out" ] || { echo "redis-benchmark gave no GET result for $sys $load" >&2; exit 1; }
      echo "   rep $rep $load $sys: qps p50 p99 = $out"
      results["$sys $load"]+="$out;"
    done
  done
done

# Where the single node's time goes under the -c 50 load.
profiled=""
if command -v perf >/dev/null 2>&1; then
  redis-benchmark -p "$single_port" -t get -n "$N" -r 10000 -d 100 -c 50 -q >/dev/null 2>&1 &
  load_pid=$!
  sleep 0.5
  if perf record -e cpu-clock -F 999 -g -p "${PIDS[1]}" -o "$work/perf.data" -- sleep 5 >/dev/null 2>&1; then
    profiled=1
  fi
  wait "$load_pid" || true
fi
load_end="$(cut -d' ' -f1-3 /proc/loadavg)"
# Every value is still there: the GETs measured hits, not misses.
for p in "$redis_port" "$single_port" "$single1_port"; do
  [ "$(redis-cli -p "$p" DBSIZE)" -eq 10000 ] || { echo "port $p lost keys during the run" >&2; exit 1; }
done
held=0
for p in "${cluster_ports[@]}"; do held=$((held + $(redis-cli -p "$p" DBSIZE))); done
[ "$held" -eq 10000 ] || { echo "the cluster lost keys during the run ($held left)" >&2; exit 1; }

# median FIELD "a b c;a b c;...": the median of field FIELD (1: qps, 2: p50, 3: p99).
median() {
  tr ';' '\n' <<<"$2" | awk -v f="$1" 'NF { print $f }' | sort -g |
    awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

mkdir -p "$(dirname "$report")"
# What is written by hand below the `<!-- by hand -->` line of the report stays.
notes=""
if [ -f "$report" ]; then notes="$(sed -n '/^<!-- by hand -->/,$p' "$report")"; fi
{
  echo "# RESP: peercache against redis-server with redis-benchmark"
  echo
  echo "Command: \`N=$N REPS=$REPS scripts/resp-bench.sh\`, commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src scripts || echo ' with uncommitted changes'),"
  echo "$(date -u +%F), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')),"
  echo "$(redis-server --version | cut -d' ' -f1-3), $(redis-benchmark --version 2>/dev/null | head -1 || true)."
  echo "Each system preloaded with 10,000 100-byte values (\`key:%012d\`, redis-cli --pipe);"
  echo "\`redis-benchmark -t get -n $N -r 10000 -d 100 -c C [-P 16]\`, every system and load"
  echo "taking turns, $REPS repetitions, medians. peercache nodes: release build, pure cache"
  echo "(\`--source none\`, \`--ttl 24h\`: every GET a hit, checked by DBSIZE after the run),"
  echo "one group. *single* runs the default worker threads (one per core), *single-1t*"
  echo "\`--worker-threads 1\` (redis-server runs commands on one thread); the cluster: 3 nodes,"
  echo "static peers, hot copies off."
  echo "*cluster-one* sends everything to one node (2 keys in 3 are a peer hop over gRPC);"
  echo "*cluster-all* runs three redis-benchmark processes at once, one per node, each with a"
  echo "third of the connections and requests (QPS summed; P50/P99 the worst of the three)."
  echo "Latencies in ms; ratios are to redis-server in the same load (QPS: higher is better;"
  echo "P99: lower is better). The client and every server share the machine's cores, so"
  echo "these are ratios on one loaded box, not capacities. Load average (1, 5, 15 min) at the"
  echo "start: $load_start; at the end: $load_end (other work shares the machine)."
  echo
  for load in "${loads[@]}"; do
    echo "## GET, ${load/-/ }" | sed 's/c50/-c 50/; s/c8/-c 8/; s/P16/-P 16/'
    echo
    echo "| system | QPS | P50 | P99 | QPS / redis | P99 / redis |"
    echo "|---|---|---|---|---|---|"
    rq=$(median 1 "${results[redis $load]}")
    r99=$(median 3 "${results[redis $load]}")
    for sys in "${systems[@]}"; do
      q=$(median 1 "${results[$sys $load]}")
      p50=$(median 2 "${results[$sys $load]}")
      p99=$(median 3 "${results[$sys $load]}")
      ratio_q=$(awk -v a="$q" -v b="$rq" 'BEGIN { printf "%.2f", a / b }')
      ratio_99=$(awk -v a="$p99" -v b="$r99" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
      printf '| %s | %.0f | %s | %s | %s | %s |\n' "$sys" "$q" "$p50" "$p99" "$ratio_q" "$ratio_99"
    done
    echo
  done
  if [ -n "$profiled" ]; then
    echo "## Where one node's time goes (GET, -c 50)"
    echo
    echo "\`perf record -e cpu-clock -F 999 -g\` on the single node for 5 s of the -c 50 GET"
    echo "load: the share of samples by where they ran, then the busiest functions (self time)."
    echo
    echo '```text'
    perf report -i "$work/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null |
      grep '%' | grep -v '^#' | sed -n '1,6p' || true
    echo
    perf report -i "$work/perf.data" --no-children --sort sym --stdio -g none 2>/dev/null |
      grep '%' | grep -v '^#' | sed -n '1,20p' || true
    echo '```'
  fi
} >"$report"
if [ -n "$notes" ]; then printf '\n%s\n' "$notes" >>"$report"; fi
echo "== wrote $report"
cat "$report"
