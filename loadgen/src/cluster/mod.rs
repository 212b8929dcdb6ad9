//! `loadgen cluster`: starts etcd (or not) and N nodes on loopback behind a slow,
//! counting origin, runs the scenarios, and collects what each one measured.
//!
//! [`fixture`] starts a cluster and measures around a load, [`event`] runs a load with a
//! membership change or a fault in it (churn, stall, graceful-leave, scale-out), and
//! `scenarios/` has one file per scenario.

mod event;
mod fixture;
mod outcome;
mod scenarios;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

use self::fixture::Ctx;
pub use self::outcome::Outcome;
use crate::client::Route;
use crate::procs::Etcd;

/// The scenarios, in the order they run.
pub const SCENARIOS: [&str; 13] = [
    "local-hit",
    "local-hit-resp",
    "remote-hit",
    "remote-hit-hot",
    "miss",
    "zipf-mixed",
    "stampede",
    "hotspot",
    "churn",
    "stall",
    "graceful-leave",
    "scale-out",
    "ceiling",
];

/// The group every node serves.
const GROUP: &str = "bench";

/// Settings of a cluster run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Nodes to start.
    pub nodes: usize,
    /// Membership through etcd (else a static peer list).
    pub etcd: bool,
    /// Latency of the origin.
    pub source_latency: Duration,
    /// Latency of the origin in the stampede, long enough for every request to arrive
    /// while the load is in flight.
    pub stampede_latency: Duration,
    /// Scenario names, in order.
    pub scenarios: Vec<String>,
    /// Measured time of a steady scenario (churn, stall, graceful-leave and scale-out
    /// run twice as long, hotspot two loads of it).
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// Closed-loop concurrency.
    pub concurrency: usize,
    /// Keys of the hit, hotspot, churn, stall, graceful-leave and scale-out scenarios.
    pub keys: u64,
    /// Keys of zipf-mixed.
    pub zipf_keys: u64,
    /// Bytes per value.
    pub value_size: usize,
    /// Cold keys of the stampede.
    pub stampede_keys: u64,
    /// Concurrent gets of each stampede key.
    pub stampede_clients: usize,
    /// The `peercache` binary.
    pub peercache_bin: PathBuf,
    /// The `etcd` binary.
    pub etcd_bin: PathBuf,
    /// Seed of the key choices.
    pub seed: u64,
    /// Mutual TLS between the nodes.
    pub peer_tls: bool,
    /// HTTPS on the client API.
    pub client_tls: bool,
}

impl Settings {
    /// The settings in one line, for the report and the terminal.
    pub fn describe(&self) -> String {
        format!(
            "{} nodes, membership {}{}, origin latency {:?} (stampede {:?}), {} in flight, {} B values, {:?} measured after {:?} warm-up per scenario (churn, stall, graceful-leave and scale-out twice as long, hotspot three runs), {} keys (zipf-mixed {})",
            self.nodes,
            if self.etcd { "etcd" } else { "static" },
            match (self.peer_tls, self.client_tls) {
                (false, false) => "",
                (true, false) => ", mutual TLS between peers",
                (false, true) => ", HTTPS for clients",
                (true, true) => ", mutual TLS between peers and HTTPS for clients",
            },
            self.source_latency,
            self.stampede_latency,
            self.concurrency,
            self.value_size,
            self.duration,
            self.warmup,
            self.keys,
            self.zipf_keys
        )
    }
}

/// The scenarios a comma-separated `list` names, in its order: `all` is every one, and
/// `remote-hit` brings `remote-hit-hot` along.
pub fn select(list: &str) -> anyhow::Result<Vec<String>> {
    let mut scenarios: Vec<String> = Vec::new();
    for name in list.split(',').map(str::trim) {
        match name {
            "all" => scenarios.extend(SCENARIOS.iter().map(|s| s.to_string())),
            "remote-hit" => scenarios.extend(["remote-hit".into(), "remote-hit-hot".into()]),
            n if SCENARIOS.contains(&n) => scenarios.push(n.to_owned()),
            n => bail!(
                "unknown scenario {n:?}; known: all, {}",
                SCENARIOS.join(", ")
            ),
        }
    }
    scenarios.dedup();
    Ok(scenarios)
}

/// Runs the selected scenarios; returns their outcomes in order.
pub async fn run_all(s: Settings, dir: PathBuf) -> anyhow::Result<Vec<Outcome>> {
    std::fs::create_dir_all(&dir)?;
    let certs = fixture::make_certs(&s, &dir)?;
    let http = crate::client::http_builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let etcd = if s.etcd {
        let etcd = Etcd::start(&s.etcd_bin, &dir, &http).await?;
        eprintln!("== etcd up at {}", etcd.endpoint);
        Some(etcd)
    } else {
        None
    };
    let mut ctx = Ctx::new(s, http, dir, etcd, certs);
    let mut outcomes: Vec<Outcome> = Vec::new();
    let names = ctx.s.scenarios.clone();
    let mut result = Ok(());
    for name in &names {
        eprintln!("== {name}");
        match run_one(&mut ctx, name, &outcomes).await {
            Ok(o) => {
                for c in o.checks.iter().filter(|c| !c.passed) {
                    eprintln!("   CHECK FAILED in {name}: {}", c.what);
                }
                outcomes.push(o);
            }
            Err(e) => {
                result = Err(e.context(format!("scenario {name}")));
                break;
            }
        }
    }
    if let Some(etcd) = ctx.etcd.take() {
        etcd.stop().await;
    }
    result.map(|()| outcomes)
}

/// Runs scenario `name`; `done` are the outcomes so far.
async fn run_one(ctx: &mut Ctx, name: &str, done: &[Outcome]) -> anyhow::Result<Outcome> {
    use scenarios::*;
    match name {
        "local-hit" => hits(ctx, Route::Owner, false).await,
        "local-hit-resp" => local_hit_resp(ctx).await,
        "remote-hit" => hits(ctx, Route::Remote, false).await,
        "remote-hit-hot" => hits(ctx, Route::Remote, true).await,
        "miss" => miss(ctx).await,
        "zipf-mixed" => zipf_mixed(ctx).await,
        "stampede" => stampede(ctx).await,
        "hotspot" => hotspot(ctx).await,
        "churn" => churn(ctx).await,
        "stall" => stall(ctx).await,
        "graceful-leave" => graceful_leave(ctx).await,
        "scale-out" => scale_out(ctx).await,
        "ceiling" => ceiling(ctx, done.iter().find(|o| o.name == "local-hit")).await,
        other => Err(anyhow::anyhow!("unknown scenario {other}")),
    }
}
