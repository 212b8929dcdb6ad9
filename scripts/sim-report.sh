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
  echo "| scenario | seeds | simulated | ops | errors | Get P99 (sim) | loads per key-version | stable excess loads | strict Gets | peer calls per node-key-version | duplicate calls | sim s / wall s |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  for s in steady_state partition one_way_partition registry_partition client_partition \
           registry_hold message_loss latency_spread crash_bounce scale_out graceful_leave stall swarm \
           steady_state_mtls partition_mtls crash_bounce_mtls rogue_host; do
    cat "$rows/$s.md"
  done
} > reports/sim.md
# The soak's section (scripts/sim-soak.sh) comes from its ledger.
if [ -f reports/sim-soak.tsv ]; then
  python3 scripts/sim-soak-report.py section reports/sim-soak.tsv reports/sim.md
fi
echo "wrote reports/sim.md"
