#!/usr/bin/env bash
# Value-size sweep (issue 19): three nodes on loopback with --compress none, lz4 and
# zstd, JSON-like values of 100 B, 4 KiB and 64 KiB written once through node 1, then
# uniform gets through node 1 (two thirds of them a hop to the key's owner; hot copies
# off) with wrk -t2 -c50; reports QPS, P50/P99 and what each node holds (entries and
# bytes of its main cache) and the compression ratio it measured. Every node has the
# same capacity (CAPACITY, default 32MiB); the 64 KiB keys are more than three nodes
# hold raw, so "entries held" shows how many more fit compressed. Writes
# reports/value-sweep.md.
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

# put.lua: every key once, a JSON-like array of records about SIZE bytes, its ids and
# names from the key (so values differ, as real records do).
cat >"$work/put.lua" <<'EOF'
local n, keys, size = 0, tonumber(os.getenv("KEYS")), tonumber(os.getenv("SIZE"))
wrk.method = "PUT"
request = function()
  local id = n % keys
  n = n + 1
  local parts, len, i = {"["}, 1, 0
  while len < size do
    local r = string.format('{"id":%d,"user":"user-%d-%d","email":"u%d@example.com","active":%s,"score":%d,"tags":["alpha","beta"]},',
      id * 1000 + i, id, i, id + i, (i % 3 == 0) and "true" or "false", (id * 7 + i * 13) % 1000)
    parts[#parts + 1] = r
    len = len + #r
    i = i + 1
  end
  local body = table.concat(parts):sub(1, size - 1) .. "]"
  return wrk.format(nil, string.format("/v1/groups/demo/keys/key:%08d", id), nil, body)
end
EOF
cat >"$work/get.lua" <<'EOF'
local from, keys = tonumber(os.getenv("FROM")), tonumber(os.getenv("KEYS"))
request = function()
  return wrk.format(nil, string.format("/v1/groups/demo/keys/key:%08d", math.random(from, keys - 1)))
end
EOF

start() { # start CODEC
  local peers="" i
  for i in 1 2 3; do
    port_free "http://127.0.0.1:1830$i"
    peers+="${peers:+,}127.0.0.1:1730$i"
  done
  for i in 1 2 3; do
    RUST_LOG=warn "$BIN" serve --grpc-addr "127.0.0.1:1730$i" --http-addr "127.0.0.1:1830$i" \
      --peers "$peers" --group "demo:$CAPACITY" --source none --hot-fill 0 --hot-second-fetch false \
      --hot-key-window 0 --compress "$1" >"$work/node$i.log" 2>&1 &
    PIDS+=($!)
  done
  for i in 1 2 3; do
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:1830$i/healthz" >/dev/null && break; sleep 0.1; done
  done
}

held() { # entries, bytes and raw/stored of node I's main cache
  curl -s "http://127.0.0.1:1830$1/v1/stats" | jq -r '.groups.demo | "\(.items) \(.bytes) \(if .stored_bytes_in > 0 then .raw_bytes_in / .stored_bytes_in else 1 end)"'
}

echo "codec size keys rps p50 p99 non2xx held1 held2 held3 bytes1 bytes2 bytes3 ratio"
for size in 100 4096 65536; do
  keys=$([ "$size" = 65536 ] && echo 8000 || echo 10000)
  # Reads go to keys every set-up holds: all of them, or for 64 KiB the last 1,000
  # written (about 21 MiB per node), so requests/s compare the same work.
  from=$([ "$size" = 65536 ] && echo 7000 || echo 0)
  for codec in none lz4 zstd; do
    start "$codec"
    # Each key written once, in order, through node 1 (one connection: a key is not
    # written twice).
    KEYS=$keys SIZE=$size wrk -t1 -c1 -d60s -s "$work/put.lua" "http://127.0.0.1:18301" >/dev/null &
    wpid=$!
    until [ "$(curl -s http://127.0.0.1:18301/metrics | awk '$1 ~ /^peercache_http_request_seconds_count\{op="set",status="200"/ { s += $2 } END { print s + 0 }')" -ge "$keys" ]; do sleep 0.2; done
    kill "$wpid" 2>/dev/null || true
    wait "$wpid" 2>/dev/null || true
    out=$(FROM=$from KEYS=$keys wrk -t2 -c50 -d"$DURATION" --latency -s "$work/get.lua" http://127.0.0.1:18301)
    read -r h1 b1 r1 <<<"$(held 1)"
    read -r h2 b2 _ <<<"$(held 2)"
    read -r h3 b3 _ <<<"$(held 3)"
    awk -v c="$codec" -v s="$size" -v k="$keys" -v h="$h1 $h2 $h3 $b1 $b2 $b3" -v r="$r1" '
      $1 == "50%" { p50 = $2 } $1 == "99%" { p99 = $2 } /Requests\/sec/ { rps = $2 }
      /Non-2xx/ { bad = $NF }
      END { printf "%s %s %s %.0f %s %s %d %s %.2f\n", c, s, k, rps, p50, p99, bad, h, r }' <<<"$out" | tee -a "$work/runs"
    stop_procs
  done
done

{
  echo "# Value-size sweep: compression off, LZ4 and zstd"
  echo
  echo "Three nodes on loopback, each \`--group demo:$CAPACITY\`, hot copies off; JSON-like"
  echo "values (arrays of small records, ids and names from the key) written once through"
  echo "node 1, then uniform gets through node 1 with wrk -t2 -c50 for $DURATION (two thirds"
  echo "of them a hop to the key's owner, coalesced). 10,000 keys of 100 B and 4 KiB, all"
  echo "read; 8,000 keys of 64 KiB (500 MiB, more than the three nodes hold raw), of which the"
  echo "last 1,000 written are read (held in every set-up). A get of a key no node holds is"
  echo "404 (\`--source none\`): the non-2xx column. \"Entries held\" is how many of the keys the"
  echo "three main caches hold after the writes, in the same capacity. The records repeat"
  echo "field names and tags, so they compress better (zstd 10-17x) than most real JSON."
  echo
  echo "- Command: \`DURATION=$DURATION CAPACITY=$CAPACITY ./scripts/value-sweep.sh\`"
  dirty=$(git diff --quiet HEAD -- src Cargo.toml || echo " with uncommitted changes")
  echo "- Commit: $(git rev-parse --short HEAD)${dirty}"
  echo "- Machine: $(nproc) cores, $(uname -sr); wrk and the nodes share the cores"
  echo
  echo "| value | codec | requests/s | P50 | P99 | non-2xx | entries held (3 nodes) | main-cache bytes (3 nodes) | raw/stored at node 1 |"
  echo "|---|---|---|---|---|---|---|---|---|"
  awk '{ printf "| %s B | %s | %s | %s | %s | %s | %d | %.1f MiB | %s |\n", $2, $1, $4, $5, $6, $7,
    $8 + $9 + $10, ($11 + $12 + $13) / 1048576, $14 }' "$work/runs"
} >reports/value-sweep.md
echo "wrote reports/value-sweep.md"
