#!/usr/bin/env bash
# Store throughput (criterion) and hit ratios against moka and quick_cache; writes
# reports/store.md. Takes several minutes on 2 cores: run it on a quiet machine.
# The throughput bench runs BENCH_RUNS times (default 3), each saved as a criterion
# baseline run1, run2, ...; the report gives the median run and the spread.
# Extra arguments go to criterion (e.g. `--quick` for a smoke run); the report records them.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_build_deps
export BENCH_STORES_COMMAND="scripts/bench-stores.sh${*:+ $*}"
runs="${BENCH_RUNS:-3}"
target="${CARGO_TARGET_DIR:-target}"
# Drop baselines of earlier invocations so the report sees only this one's runs.
find "$target/criterion" -type d -name 'run[0-9]*' -prune -exec rm -rf {} + 2>/dev/null || true
for run in $(seq 1 "$runs"); do
  echo "== store throughput, run $run of $runs"
  cargo bench --bench stores -- --noplot --save-baseline "run$run" "$@"
done
cargo bench --bench hit_ratio
