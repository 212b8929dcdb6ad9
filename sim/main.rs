//! The simulation testbed (turmoil): `cargo test --features sim`.
//!
//! The node code runs unchanged on simulated hosts. One seed draws a whole run (cluster
//! shape, timings, workload, faults, network latencies); checkers judge the recorded
//! history; the same seed replays the same run.
//!
//! - `SIM_SEED=<n>` runs seed `n` only; `SIM_SEEDS=<count>` runs `count` seeds from
//!   `SIM_FIRST` (default 1) on.
//! - `SIM_KEEP_GOING=1` runs every seed even after one fails, prints each failure, and
//!   fails at the end listing them (the soak, scripts/sim-soak.sh, uses it).
//! - `SIM_FIRST_DRAWN=1` runs each seed's swarm as drawn before delays at risky points,
//!   hot writes and stalls were added (to replay a failure found before then).
//! - `SIM_BUG=<name>` plants a known bug in the nodes (src/buggify.rs;
//!   scripts/sim-planted.sh runs them all). `SIM_WALL_BUDGET=<s>` bounds a seed's
//!   wall-clock time (default 300 s).
//! - Every seed prints `sim: scenario=<name> seed=<n> trace=<hex>`, the trace being a
//!   hash of the full history.
//! - A failure prints what was violated, the history around it and the command that
//!   replays it.
//! - `SIM_LOG=<filter>` (e.g. `SIM_LOG=debug`) prints the nodes' logs, stamped with
//!   simulated time and the host, to debug a failing seed.
//! - `SIM_REPORT=<dir>` writes each scenario's row of the report to `<dir>/<scenario>.md`
//!   (`scripts/sim-report.sh` turns them into reports/sim.md).

mod check;
mod cluster;
mod harness;
mod history;
mod races;
mod read_through;
mod registry;
mod scenarios;
mod staleness;

/// Sends the nodes' logs to the test output when `SIM_LOG` sets a filter.
fn init_logging() {
    struct SimTime;
    impl tracing_subscriber::fmt::time::FormatTime for SimTime {
        fn format_time(
            &self,
            w: &mut tracing_subscriber::fmt::format::Writer<'_>,
        ) -> std::fmt::Result {
            let at = harness::world::now();
            write!(w, "{:>9.3}s", at.as_secs_f64())
        }
    }
    if let Ok(filter) = std::env::var("SIM_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_timer(SimTime)
            .with_ansi(false)
            .with_test_writer()
            .try_init();
    }
}

/// The seed of the single-seed tests (`SIM_SEED`, default 1).
fn seed() -> u64 {
    std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// The seeds a scenario runs: `SIM_SEED` alone, or `SIM_SEEDS` (else `default`) many
/// from `SIM_FIRST` (else 1) on.
fn seeds(default: u64) -> Vec<u64> {
    let var = |name: &str| {
        std::env::var(name).ok().map(|s| {
            s.parse::<u64>()
                .unwrap_or_else(|_| panic!("{name}={s:?} is not a number"))
        })
    };
    if let Some(seed) = var("SIM_SEED") {
        return vec![seed];
    }
    let first = var("SIM_FIRST").unwrap_or(1);
    (first..first + var("SIM_SEEDS").unwrap_or(default)).collect()
}

/// A standalone test: runs `run` with the test's seed and judges the result with `check`,
/// then runs it again and requires the same result. A failure prints the replay command.
fn replayed<T: PartialEq + std::fmt::Debug>(
    test: &'static str,
    run: impl Fn(u64) -> T,
    check: impl FnOnce(u64, &T),
) {
    let seed = seed();
    let _replay = Replay {
        scenario: test,
        seed,
    };
    let first = run(seed);
    check(seed, &first);
    let again = run(seed);
    assert_eq!(first, again, "SIM_SEED={seed} must replay identically");
}

/// The command that replays `seed` of the test `test`.
fn replay_command(test: &str, seed: u64) -> String {
    format!("replay: SIM_SEED={seed} cargo test --features sim --test sim {test}")
}

/// Prints the command that replays a failing scenario, when dropped during a panic.
struct Replay {
    scenario: &'static str,
    seed: u64,
}

impl Drop for Replay {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "sim: scenario={} seed={} FAILED; {}",
                self.scenario,
                self.seed,
                replay_command(self.scenario, self.seed)
            );
        }
    }
}
