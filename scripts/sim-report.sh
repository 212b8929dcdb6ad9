#!/usr/bin/env bash
# Runs every simulated scenario over SEEDS seeds (default 20) in a release build and
# writes reports/sim.md. A long run: `scripts/sim-report.sh 1000` (about an hour per
# hundred seeds per scenario on 2 cores; SIM_SEEDS-style seeds 1..=N).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_build_deps
seeds="${1:-20}"
rows="$(mktemp -d)"
trap 'rm -rf "$rows"' EXIT
started=$(date +%s)
SIM_REPORT="$rows" SIM_SEEDS="$seeds" cargo test --release --features sim --test sim scenarios:: -- --test-threads=2
elapsed=$(( $(date +%s) - started ))
{
  echo "# Simulation testbed: scenarios over many seeds"
  echo
  echo "Command: \`scripts/sim-report.sh $seeds\` (release build; seeds 1..=$seeds per scenario;"
  echo "every seed checked for safety, liveness, efficiency and memory, the first seed of each"
  echo "scenario replayed for determinism). Commit $(git rev-parse --short HEAD), $(nproc) cores"
  echo "($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), ${elapsed} s wall in all."
  echo
  echo "Columns: simulated time summed over the seeds; operations issued by the clients;"
  echo "errors (any non-200 answer, failed connection or client timeout) with their share;"
  echo "P99 of Get latency in simulated time; successful source loads per distinct"
  echo "(key, version) over the whole run (1.0 is ideal; churn and evictions add to it);"
  echo "loads beyond one per (key, version) in the stable phases (before the first fault and"
  echo "after recovery; a write to the key in between starts a new fill); successful Gets held"
  echo "to the strict safety rule (an acknowledged write before them with no fault touching"
  echo "writer, owner or reader and every view agreeing: they must see it) out of all"
  echo "successful Gets, every one held to the general rule (one hot TTL after the views"
  echo "agree); peer calls per distinct (asking node, key, source version) in the stable"
  echo "phases (hot copies expiring and evictions make it exceed 1); calls made while the same"
  echo "node's call for the same key was in flight with no write between (must be 0);"
  echo "simulated seconds per wall-clock second of one test thread."
  echo
  echo "| scenario | seeds | simulated | ops | errors | Get P99 (sim) | loads per key-version | stable excess loads | reloads after the first fault | handed over | strict Gets | peer calls per node-key-version | duplicate calls | sim s / wall s |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  for s in steady_state partition one_way_partition registry_partition client_partition \
           registry_hold message_loss latency_spread crash_bounce scale_out graceful_leave stall swarm \
           steady_state_mtls partition_mtls crash_bounce_mtls rogue_host; do
    cat "$rows/$s.md"
  done
  cat <<'EOF'

## Mutual TLS in the simulator

The nodes' own TLS (src/tls: rustls on ring, the handshake run on any `Net` stream by
src/net/transport.rs) runs unchanged over turmoil's simulated TCP. `sim/harness/tls.rs`
makes one cluster CA and a certificate per node host (`node<i>`, which is what
`server_name` makes of the member id `node<i>:7000`) once per process with rcgen, valid
for ten years because rustls checks the real clock; each run builds fresh `Tls` objects
from them, so the refusal counters start at zero.

- `steady_state_mtls`, `partition_mtls`, `crash_bounce_mtls` run the very swarms of
  their plaintext tests with mutual TLS between the nodes and the same checkers, plus
  `handshakes`: values were fetched from owners through the handshakes, and in a run
  without faults no handshake failed on either side. The swarm draws mutual TLS in about
  30% of its seeds (a stream of its own, so the rest of each seed's draw is unchanged;
  the pinned regression seeds stay plaintext).
- `rogue_host`: a `rogue` host with a certificate from another CA registers as a member
  in the registry (plaintext and open to anyone, like etcd without auth) for a window
  of 6 s or more, under a member id that makes it the owner of `k0` (the hottest key),
  so every ring routes reads to it, and calls every node it learns of from the registry
  with its certificate, with TLS but no certificate, and in plaintext: a Get, a Set and
  a Remove of forged values and an invalidation at version 2^61, each on a fresh
  connection. Its own peer server (no client authentication) answers with
  forged values and counts what reaches it. The `rogue` checker requires: every node's
  ring had it; it made every call with every credential; every call failed in the
  transport and the nodes refused at least one incoming handshake per call; the nodes
  refused its certificate when dialling it (counted on their side and on its server);
  its server completed no handshake and received no request; every Get of a key a
  node's ring gave it was served by the node itself (or passed on the source's injected
  failure). Safety would fail any forged value a client read.
- Determinism holds with TLS: the handshakes' keys, nonces and tickets come from the OS,
  so the bytes differ between runs (a signature's length by a byte or two), but not
  the number of writes that carry them, and turmoil draws one latency per write. The
  TLS tests stay in the determinism check (each test's first seed replayed).
EOF
} > reports/sim.md
# The soak's section (scripts/sim-soak.sh) comes from its ledger.
if [ -f reports/sim-soak.tsv ]; then
  python3 scripts/sim-soak-report.py section reports/sim-soak.tsv reports/sim.md
fi
echo "wrote reports/sim.md"
