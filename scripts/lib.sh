# Shared by the scripts (sourced, not run): installing what they need when it is missing.

# need COMMAND PACKAGE [HINT]: installs the Debian PACKAGE (apt-get) unless COMMAND is on the
# PATH; without apt-get, says what to install and exits.
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if command -v apt-get >/dev/null 2>&1; then
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "== installing $2 (apt-get), for $1"
    if ! $sudo apt-get install -y -qq "$2" >/dev/null 2>&1; then
      $sudo apt-get update -qq && $sudo apt-get install -y -qq "$2" >/dev/null
    fi
    command -v "$1" >/dev/null 2>&1 && return 0
  fi
  echo "error: '$1' is missing and could not be installed with apt-get here." >&2
  echo "       Install it with your package manager ($2 on Debian/Ubuntu)${3:+, $3}." >&2
  exit 1
}

# What building needs besides cargo: protoc, which etcd-client's build script runs.
need_build_deps() {
  if [ -z "${PROTOC:-}" ]; then
    need protoc protobuf-compiler "or set PROTOC to a protoc binary, e.g. from 'cargo install protox --features bin'"
  fi
}

# etcd for discovery: the server (Debian's etcd-server, 3.4+).
need_etcd() {
  if [ -z "${ETCD_BIN:-}" ]; then
    need etcd etcd-server "or put an etcd 3.4+ binary on the PATH or in ETCD_BIN"
  fi
}

# The Redis tools tests/resp runs: redis-cli and redis-benchmark (Debian's redis-tools),
# and redis-py in a virtualenv at target/redis-py (python3-venv), made when missing.
need_redis_clients() {
  need redis-cli redis-tools
  need redis-benchmark redis-tools
  if [ -z "${REDIS_PY_PYTHON:-}" ] && ! target/redis-py/bin/python -c 'import redis' >/dev/null 2>&1; then
    need python3 python3
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
      local sudo=""
      [ "$(id -u)" -ne 0 ] && sudo="sudo"
      echo "== installing python3-venv (apt-get), for redis-py's virtualenv"
      $sudo apt-get install -y -qq python3-venv >/dev/null 2>&1 ||
        { $sudo apt-get update -qq && $sudo apt-get install -y -qq python3-venv >/dev/null; } ||
        { echo "error: python3-venv is missing; install it (apt-get install python3-venv)" >&2; exit 1; }
    fi
    echo "== installing redis-py in target/redis-py (python3 -m venv, pip)"
    rm -rf target/redis-py
    python3 -m venv target/redis-py
    target/redis-py/bin/pip install -q redis
  fi
}

# build_base REV ARTIFACT DEST CARGO_ARGS...: builds revision REV (a benchmark's BASE) in a
# temporary worktree with `cargo build --release CARGO_ARGS`, in the same target
# directory (its dependencies are built already), copies release/ARTIFACT to DEST, and
# builds the head again, so target/ is left holding the head's build.
build_base() {
  local rev=$1 artifact=$2 dest=$3 target="${CARGO_TARGET_DIR:-target}" tree status=0
  shift 3
  tree=$(mktemp -d)
  git worktree add --detach --quiet "$tree/base" "$rev"
  CARGO_TARGET_DIR="$PWD/$target" cargo build --release --quiet --manifest-path "$tree/base/Cargo.toml" "$@" &&
    cp "$target/release/$artifact" "$dest" || status=$?
  git worktree remove --force "$tree/base"
  rm -rf "$tree"
  [ "$status" = 0 ] || return "$status"
  cargo build --release --quiet "$@"
}

# Background processes of a benchmark: bench_procs sets up PIDS, stop_procs (kills them
# and waits) and a trap that stops them and removes $work on exit.
bench_procs() {
  PIDS=()
  trap 'stop_procs; rm -rf "${work:-}"' EXIT INT TERM
}
stop_procs() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
}

# port_free URL: exits with an error if a node already answers at URL (its /healthz), so
# a benchmark never measures something left running from before.
port_free() {
  if curl -s "$1/healthz" >/dev/null; then
    echo "error: $1 already answers: stop what runs there first" >&2
    exit 1
  fi
}
