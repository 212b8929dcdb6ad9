#!/usr/bin/env bash
# The main job: starts a local cluster (an etcd and three `peercache serve` nodes on
# loopback, behind an origin with 5 ms latency), runs the load scenarios against it,
# prints a QPS / latency table per scenario and writes reports/cluster.md, one JSON per
# scenario and SVG plots under reports/cluster/. Stops everything it started.
#   (no arguments)  quick: 4 s per scenario, about a minute in all
#   --full          30 s per scenario (churn and scale-out 60 s), about six minutes
#   other arguments go to `loadgen cluster` (see `target/release/loadgen cluster --help`),
#   e.g. --static (no etcd; scale-out is skipped), --scenarios miss,stampede, --nodes 5
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=(--quick)
ARGS=()
STATIC=""
for arg in "$@"; do
  case "$arg" in
    --full) QUICK=() ;;
    --static) STATIC=1; ARGS+=("$arg") ;;
    *) ARGS+=("$arg") ;;
  esac
done

# shellcheck source=scripts/lib.sh
. scripts/lib.sh
need_build_deps
[ -z "$STATIC" ] && need_etcd

echo "== building peercache and loadgen (release)"
cargo build --release --quiet --bins
exec target/release/loadgen cluster "${QUICK[@]}" "${ARGS[@]}"
