#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/) and runs each for SECONDS (default 30) on the stable
# toolchain, then replays the kept crash inputs as tests and writes a report.
#
#   scripts/fuzz.sh          # 30 s per target, as the test command runs it
#   scripts/fuzz.sh 600      # the report's run: 10 minutes per target
#
# A target that fails leaves its input in fuzz/artifacts/TARGET/; it is copied to
# fuzz/regressions/TARGET/ (commit it), which tests/fuzz_regressions.rs replays, and the
# script fails. The report goes to reports/fuzz.md, or to FUZZ_REPORT if set (the test
# command sets it, so a short run does not replace the long run's report).
#
# No sanitizer (`-s none`): cargo fuzz's default, AddressSanitizer, needs a nightly
# toolchain. Debug assertions are on (`-a`), so integer overflow panics too. Installs
# cargo-fuzz (cargo install) and g++ (apt-get, for libFuzzer) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
need_build_deps
need g++ g++
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz (cargo install --locked)"
  cargo install cargo-fuzz --locked
fi

seconds="${1:-30}"
report="${FUZZ_REPORT:-reports/fuzz.md}"
targets=(codec http peer registry resp)
# libFuzzer's limits per run: memory, input size, and the time one input may take.
libfuzzer_args=(-max_total_time="$seconds" -rss_limit_mb=2048 -max_len=4096 -timeout=10
  -print_final_stats=1)
# cargo fuzz sets RUSTFLAGS (coverage instrumentation), which replaces
# .cargo/config.toml's rustflags; it keeps what RUSTFLAGS holds already, so pass the
# main build's flag on for the same code.
export RUSTFLAGS="${RUSTFLAGS:-} --cfg tokio_unstable"
fuzz=(cargo fuzz run -s none -a --fuzz-dir fuzz)

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
started=$(date +%s)
echo "== building the fuzz targets"
cargo fuzz build -s none -a --fuzz-dir fuzz
built=$(date +%s)

failed=0
rows=""
for t in "${targets[@]}"; do
  echo "== fuzzing $t for ${seconds} s"
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t" "fuzz/regressions/$t"
  before="$(ls "fuzz/artifacts/$t")"
  status=0
  "${fuzz[@]}" "$t" "fuzz/corpus/$t" -- "${libfuzzer_args[@]}" >"$logs/$t.log" 2>&1 || status=$?
  runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" | tail -1 | grep -o '[0-9]*$' || true)"
  took="$(grep -o 'Done [0-9]* runs in [0-9]* second' "$logs/$t.log" | tail -1 | awk '{print $5}' || true)"
  crashes=0
  for f in "fuzz/artifacts/$t"/*; do
    [ -e "$f" ] || continue
    name="$(basename "$f")"
    if ! grep -qxF "$name" <<<"$before"; then
      cp "$f" "fuzz/regressions/$t/$name"
      crashes=$((crashes + 1))
      echo "   failing input kept as fuzz/regressions/$t/$name"
    fi
  done
  if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then
    # Failed without leaving an input (a build or setup error): say so.
    tail -n 30 "$logs/$t.log" >&2
    crashes="failed (exit $status)"
  fi
  if [ "$status" -ne 0 ]; then
    failed=1
    grep -m1 -B2 -A20 "panicked at\|ERROR: libFuzzer" "$logs/$t.log" >&2 || true
  fi
  kept="$(find "fuzz/regressions/$t" -type f | wc -l)"
  echo "   ${runs:-?} runs in ${took:-?} s, crashes: $crashes"
  rows+="| $t | ${runs:-?} | ${took:-?} | $crashes | $kept |"$'\n'
done
fuzzed=$(date +%s)

echo "== replaying the kept inputs (tests/fuzz_regressions.rs)"
cargo test --features fuzzing --test fuzz_regressions || failed=1
finished=$(date +%s)

mkdir -p "$(dirname "$report")"
{
  echo "# Fuzzing"
  echo
  echo "Command: \`scripts/fuzz.sh $seconds\` (cargo fuzz on stable, \`-s none -a\`: no sanitizer,"
  echo "debug assertions and overflow checks on; libFuzzer \`${libfuzzer_args[*]}\`)."
  echo "Commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src fuzz || echo ' with uncommitted changes'),"
  echo "$(date -u +%F), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'))."
  echo "Wall time: build $((built - started)) s, fuzzing $((fuzzed - built)) s, replay $((finished - fuzzed)) s."
  echo
  echo "Targets (fuzz/fuzz_targets/, bodies in src/fuzzing/): **codec**, a frame from a peer"
  echo "decoded by the codec its first byte names, never past the limit, and what any codec"
  echo "encodes decoding back; **http**, one request (method,"
  echo "path and query, headers, body) through the real router of a fresh node, no 5xx but"
  echo "502/503/504; **peer**, up to 16 peer gRPC calls (fields from the input or"
  echo "prost-decoded) on one node, no Internal but failed loads, every write's version"
  echo "accepted by its own invalidation; **registry**, up to 32 registry calls with time"
  echo "advancing between them, revisions never going back, ranges and watches in order"
  echo "and under their prefix; **resp**, raw bytes or pipelined commands (inline or arrays)"
  echo "through one RESP connection of a fresh node, every reply a whole RESP frame and one"
  echo "per command. No panic anywhere."
  echo
  echo "Executions are libFuzzer's final \`stat::number_of_executed_units\`; crashes are the"
  echo "failing inputs this run found (each kept in fuzz/regressions/TARGET/ and replayed by"
  echo "tests/fuzz_regressions.rs); kept counts every input there."
  echo
  echo "| target | executions | seconds | crashes | kept inputs |"
  echo "|---|---|---|---|---|"
  printf '%s' "$rows"
} >"$report"
echo "== wrote $report"
exit "$failed"
