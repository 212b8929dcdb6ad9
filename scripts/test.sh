#!/usr/bin/env bash
# The test command: format, lints, then every test (unit, integration, doc, the tests
# against a real etcd, and the simulated scenarios behind the `sim` feature), and a short
# run of every fuzz target. Installs what it needs when missing: rustfmt and clippy
# (rustup), protoc, etcd, g++ and redis-tools (apt-get), redis-py (a virtualenv in
# target/redis-py), cargo-fuzz (cargo install).
set -euo pipefail
cd "$(dirname "$0")/.."

need_component() {
  if ! cargo "$1" --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then
      rustup component add "$2"
    else
      echo "error: 'cargo $1' is missing and rustup is not available; install the $2 component of your Rust toolchain" >&2
      exit 1
    fi
  fi
}
need_component fmt rustfmt
need_component clippy clippy
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
need_build_deps
# tests/etcd runs a real etcd server; it fails (saying how to install it) without one.
need_etcd
# tests/resp runs redis-cli, redis-benchmark and redis-py against real nodes.
need_redis_clients
# tests/compression.rs reads compressed values with curl --compressed.
need curl curl

# .cargo/config.toml sets `--cfg tokio_unstable` (turmoil seeds the simulated hosts'
# runtimes only with it); a RUSTFLAGS from the environment would replace that, so add it.
if [ -n "${RUSTFLAGS:-}" ]; then
  export RUSTFLAGS="$RUSTFLAGS --cfg tokio_unstable"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --all-features -- -D warnings
echo "== workload generator checks and a small hit-ratio replay (benches/hit_ratio.rs in test mode)"
cargo test --bench hit_ratio
echo "== every value codec round-trips the payloads of benches/codecs.rs (test mode)"
cargo test --bench codecs
echo "== cargo test (all features; the simulator's standalone tests, its scenarios below)"
cargo test --all-features -- --skip scenarios::
# The scenarios in a release build: a seed then takes seconds of wall-clock time. h2 (under
# tonic) times the expiry of locally reset streams with the wall clock (30 s), so a seed
# that takes longer than that, as debug seeds on a loaded machine can, may not replay
# identically; in release they stay far below it.
echo "== simulated scenarios (release build)"
cargo test --release --features sim --test sim scenarios::
# 30 s per fuzz target; the report of the long run (scripts/fuzz.sh 600) stays as it is.
echo "== fuzzing, 30 s per target (scripts/fuzz.sh)"
FUZZ_REPORT=target/fuzz-short.md scripts/fuzz.sh 30
