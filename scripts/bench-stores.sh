#!/usr/bin/env bash
# Store throughput (criterion) and hit ratios against moka and quick_cache; writes
# reports/store.md. Takes a few minutes on 2 cores: run it on a quiet machine.
# Extra arguments go to criterion (e.g. `--quick` for a smoke run); the report records them.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_STORES_COMMAND="scripts/bench-stores.sh${*:+ $*}"
cargo bench --bench stores -- --noplot "$@"
cargo bench --bench hit_ratio
