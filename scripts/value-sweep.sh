#!/usr/bin/env bash
# Value-size sweep (issue 19): three nodes on loopback with --compress none, lz4, zstd
# and zstd only on the wire (--compress-wire-only), JSON-like values of 100 B, 4 KiB and
# 64 KiB written once through node 1, then two read phases with wrk -t2 -c50:
#  - remote-hit: uniform gets through node 1 (two thirds of them a hop to the key's
#    owner; hot copies off), once as a plain client and once with
#    `Accept-Encoding: gzip, zstd` (a browser's: values kept or received in zstd pass
#    through compressed);
#  - zipf-mixed: a fresh cluster with hot copies on, zipf 0.99 over the keys, 95 % gets
#    and 5 % puts of new JSON values, through node 1.
# Reports QPS, P50/P99, what each node holds (entries and bytes of its main cache) and
# the compression ratio it measured. Every node has the same capacity (CAPACITY,
# default 32MiB); the 64 KiB keys are more than three nodes hold raw, so "entries held"
# shows how many more fit compressed. Writes reports/value-sweep.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need wrk wrk
need curl curl
need jq jq
need_build_deps
DURATION=${DURATION:-5s}
CAPACITY=${CAPACITY:-32MiB}
cargo build --release --quiet --bin peercache
BIN=target/release/peercache
work=$(mktemp -d)
bench_procs

# json.lua: json(id), a JSON-like array of records about SIZE bytes, its ids and names
# from id (so values differ, as real records do). put.lua writes every key once;
# zipf.lua puts fresh values.
cat >"$work/json.lua" <<'EOF'
local size = tonumber(os.getenv("SIZE"))
function json(id)
  local parts, len, i = {"["}, 1, 0
  while len < size do
    local r = string.format('{"id":%d,"user":"user-%d-%d","email":"u%d@example.com","active":%s,"score":%d,"tags":["alpha","beta"]},',
      id * 1000 + i, id, i, id + i, (i % 3 == 0) and "true" or "false", (id * 7 + i * 13) % 1000)
    parts[#parts + 1] = r
    len = len + #r
    i = i + 1
  end
  return table.concat(parts):sub(1, size - 1) .. "]"
end
EOF
{ cat "$work/json.lua"; cat <<'EOF'
local n, keys = 0, tonumber(os.getenv("KEYS"))
wrk.method = "PUT"
request = function()
  local id = n % keys
  n = n + 1
  return wrk.format(nil, string.format("/v1/groups/demo/keys/key:%08d", id), nil, json(id))
end
EOF
} >"$work/put.lua"
cat >"$work/get.lua" <<'EOF'
local from, keys = tonumber(os.getenv("FROM")), tonumber(os.getenv("KEYS"))
request = function()
  return wrk.format(nil, string.format("/v1/groups/demo/keys/key:%08d", math.random(from, keys - 1)))
end
EOF
# zipf.lua: zipf 0.99 over keys FROM..KEYS-1 (rank r is key FROM+r), 5 % of requests a
# put of a fresh value.
{ cat "$work/json.lua"; cat <<'EOF'
local from, keys = tonumber(os.getenv("FROM")), tonumber(os.getenv("KEYS"))
local n, cdf, total = keys - from, {}, 0
for r = 1, n do total = total + 1 / r ^ 0.99; cdf[r] = total end
local writes = 0
local function rank()
  local u, lo, hi = math.random() * total, 1, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return lo - 1
end
request = function()
  local path = string.format("/v1/groups/demo/keys/key:%08d", from + rank())
  if math.random() >= 0.05 then return wrk.format("GET", path) end
  writes = writes + 1
  return wrk.format("PUT", path, nil, json(keys + writes))
end
EOF
} >"$work/zipf.lua"

start() { # start CODEC HOT: CODEC none, lz4, zstd or zstd-wire; HOT on or off
  local peers="" i flags
  case "$1" in
    *-wire) flags=(--compress "${1%-wire}" --compress-wire-only) ;;
    *) flags=(--compress "$1") ;;
  esac
  [ "$2" = off ] && flags+=(--hot-fill 0 --hot-second-fetch false --hot-key-window 0)
  for i in 1 2 3; do
    port_free "http://127.0.0.1:1830$i"
    peers+="${peers:+,}127.0.0.1:1730$i"
  done
  for i in 1 2 3; do
    RUST_LOG=warn "$BIN" serve --grpc-addr "127.0.0.1:1730$i" --http-addr "127.0.0.1:1830$i" \
      --peers "$peers" --group "demo:$CAPACITY" --source none "${flags[@]}" >"$work/node$i.log" 2>&1 &
    PIDS+=($!)
  done
  for i in 1 2 3; do
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:1830$i/healthz" >/dev/null && break; sleep 0.1; done
  done
}

write_all() { # write_all KEYS SIZE: each key once, in order, through node 1 (one
  # connection: a key is not written twice)
  KEYS=$1 SIZE=$2 wrk -t1 -c1 -d120s -s "$work/put.lua" "http://127.0.0.1:18301" >/dev/null &
  local wpid=$!
  until [ "$(curl -s http://127.0.0.1:18301/metrics | awk '$1 ~ /^peercache_http_request_seconds_count\{op="set",status="200"/ { s += $2 } END { print s + 0 }')" -ge "$1" ]; do sleep 0.2; done
  kill "$wpid" 2>/dev/null || true
  wait "$wpid" 2>/dev/null || true
}

measure() { # measure ARGS...: wrk -t2 -c50 through node 1 -> "rps p50 p99 non2xx"
  wrk -t2 -c50 -d"$DURATION" --latency "$@" http://127.0.0.1:18301 | awk '
    $1 == "50%" { p50 = $2 } $1 == "99%" { p99 = $2 } /Requests\/sec/ { rps = $2 }
    /Non-2xx/ { bad = $NF }
    END { printf "%.0f %s %s %d\n", rps, p50, p99, bad }'
}

held() { # entries, bytes and raw/stored of node I's main cache
  curl -s "http://127.0.0.1:1830$1/v1/stats" | jq -r '.groups.demo | "\(.items) \(.bytes) \(if .stored_bytes_in > 0 then .raw_bytes_in / .stored_bytes_in else 1 end)"'
}

for size in 100 4096 65536; do
  keys=$([ "$size" = 65536 ] && echo 8000 || echo 10000)
  # Reads go to keys every set-up holds: all of them, or for 64 KiB the last 1,000
  # written (about 21 MiB per node), so requests/s compare the same work.
  from=$([ "$size" = 65536 ] && echo 7000 || echo 0)
  for codec in none lz4 zstd zstd-wire; do
    start "$codec" off
    write_all "$keys" "$size"
    read -r rps p50 p99 bad <<<"$(FROM=$from KEYS=$keys measure -s "$work/get.lua")"
    read -r rps_ae _ p99_ae bad_ae <<<"$(FROM=$from KEYS=$keys measure -s "$work/get.lua" -H 'Accept-Encoding: gzip, zstd')"
    read -r h1 b1 r1 <<<"$(held 1)"
    read -r h2 b2 _ <<<"$(held 2)"
    read -r h3 b3 _ <<<"$(held 3)"
    stop_procs
    start "$codec" on
    write_all "$keys" "$size"
    read -r rps_z _ p99_z bad_z <<<"$(FROM=$from KEYS=$keys SIZE=$size measure -s "$work/zipf.lua")"
    # Share of node 1's gets answered decoded from its cache of decoded values.
    dec_z=$(curl -s http://127.0.0.1:18301/v1/stats | jq -r '.groups.demo | if .gets > 0 then .decoded_hits / .gets else 0 end')
    stop_procs
    echo "$codec $size $keys $rps $p50 $p99 $((bad + bad_ae + bad_z)) $h1 $h2 $h3 $b1 $b2 $b3 $r1 $rps_ae $p99_ae $rps_z $p99_z $dec_z" | tee -a "$work/runs"
  done
done

{
  echo "# Value-size sweep: compression off, LZ4, zstd, and zstd on the wire only"
  echo
  echo "Three nodes on loopback, each \`--group demo:$CAPACITY\`; JSON-like values (arrays"
  echo "of small records, ids and names from the key) written once through node 1. 10,000"
  echo "keys of 100 B and 4 KiB; 8,000 keys of 64 KiB (500 MiB, more than the three nodes"
  echo "hold raw), of which reads go to the last 1,000 written (held in every set-up), so"
  echo "requests/s compare the same work. All reads with wrk -t2 -c50 for $DURATION through"
  echo "node 1:"
  echo
  echo "- **remote-hit**: hot copies off, uniform gets (two thirds a hop to the key's owner,"
  echo "  coalesced); as a plain client, and with \`Accept-Encoding: gzip, zstd\` (values"
  echo "  kept or received in zstd are passed through compressed; the others as before)."
  echo "- **zipf-mixed**: a fresh cluster with hot copies on, written again, then zipf 0.99"
  echo "  over the same keys, 95 % gets and 5 % puts of new JSON values. \"decoded\" is the"
  echo "  share of node 1's gets answered from its cache of values kept compressed but read"
  echo "  decoded before (\`--compress-decoded\`, default a sixteenth of the capacity), without"
  echo "  decompressing them again."
  echo
  echo "\`zstd-wire\` keeps values as they are and compresses them only for peers"
  echo "(\`--compress zstd --compress-wire-only\`). \"Entries held\" is how many of the keys the"
  echo "three main caches hold after the writes of the remote-hit cluster, in the same"
  echo "capacity. \"x raw\" divides by the \`none\` row of the same size, in this run. The"
  echo "records repeat field names and tags, so they compress better (zstd 10-17x) than most"
  echo "real JSON. Non-2xx over all three phases should be 0 (\`--source none\`: a get of a"
  echo "key no node holds would be 404)."
  echo
  echo "- Command: \`DURATION=$DURATION CAPACITY=$CAPACITY ./scripts/value-sweep.sh\`"
  dirty=$(git diff --quiet HEAD -- src Cargo.toml || echo " with uncommitted changes")
  echo "- Commit: $(git rev-parse --short HEAD)${dirty}"
  echo "- Machine: $(nproc) cores, $(uname -sr); wrk and the nodes share the cores"
  echo
  echo "| value | codec | remote-hit req/s | x raw | P50 | P99 | with Accept-Encoding req/s | x raw | P99 | zipf-mixed req/s | x raw | P99 | decoded | non-2xx | entries held (3 nodes) | main-cache bytes (3 nodes) | raw/stored at node 1 |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  awk '$1 == "none" { base[$2] = $4; base_ae[$2] = $15; base_z[$2] = $17 }
    { printf "| %s B | %s | %s | %.2f | %s | %s | %s | %.2f | %s | %s | %.2f | %s | %.0f %% | %s | %d | %.1f MiB | %s |\n",
      $2, $1, $4, $4 / base[$2], $5, $6, $15, $15 / base_ae[$2], $16, $17, $17 / base_z[$2], $18, $19 * 100, $7,
      $8 + $9 + $10, ($11 + $12 + $13) / 1048576, $14 }' "$work/runs"
} >reports/value-sweep.md
echo "wrote reports/value-sweep.md"
