//! `loadgen`: load for peercache nodes, and whole-cluster scenarios with reports.
//!
//! - `loadgen run` sends a workload to running nodes (closed or open loop) and prints
//!   QPS and latency percentiles (HdrHistogram), optionally as JSON.
//! - `loadgen cluster` starts etcd (or not) and N `peercache serve` processes on
//!   loopback behind a slow counting origin, runs the scenarios (hits, misses, a
//!   stampede, a hot key, churn, a stalled node, a graceful leave, scale-out, the HTTP
//!   ceiling), and writes `reports/cluster.md`, one JSON per scenario and SVG plots.

mod client;
mod cluster;
mod http1;
mod keys;
mod origin;
mod pool;
mod procs;
mod report;
mod resp;
mod run;
mod stats;
#[allow(dead_code)]
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::client::{Client, Protocol, Route, Targets};
use crate::keys::{Mix, Workload};
use crate::run::{Arrivals, Load, RunConfig};

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Load generator and cluster scenarios for peercache"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sends a workload to running nodes and prints QPS and latency percentiles.
    Run(RunArgs),
    /// Starts a local cluster, runs the scenarios, and writes reports.
    Cluster(ClusterArgs),
    /// A server that answers the key route with a constant (the `ceiling` scenario).
    #[command(hide = true)]
    CeilingServer {
        #[arg(long)]
        addr: String,
        #[arg(long, default_value_t = 100)]
        value_size: usize,
        /// Answers group `hop` by first getting the key from this server
        /// (`http://host:port`), as group `constant`: a peer hop's floor.
        #[arg(long)]
        forward: Option<String>,
    },
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Args)]
struct RunArgs {
    /// Nodes' HTTP base URLs, comma separated (http://127.0.0.1:8001,... or https://);
    /// with --protocol resp their Redis addresses, redis://127.0.0.1:6381,...
    #[arg(long, value_delimiter = ',', required = true)]
    target: Vec<String>,
    /// A PEM CA certificate to trust for https targets, besides the built-in roots.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// http: the client API, spread over the targets; grpc: the peer protocol, each
    /// request sent to its key's owner (the targets' rings say who that is); resp: the
    /// Redis protocol (GET/SET/DEL) spread over the targets, on --group's database.
    #[arg(long, value_enum, default_value = "http")]
    protocol: Protocol,
    /// Group the keys are in.
    #[arg(long, default_value = "default")]
    group: String,
    /// Size of the key space.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    keys: u64,
    /// uniform, zipf:EXP (e.g. zipf:0.99), hotspot:FRACTION,PROB (e.g. hotspot:0.2,0.8), scan.
    #[arg(long, default_value = "uniform")]
    workload: Workload,
    /// Operation weights, e.g. get=95,set=5 or get=90,set=5,remove=5.
    #[arg(long, default_value = "get=100")]
    mix: Mix,
    /// Bytes per written value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Closed loop: this many requests in flight (the default, 32).
    #[arg(long, conflicts_with = "rate", value_parser = clap::value_parser!(u64).range(1..100_000))]
    concurrency: Option<u64>,
    /// Open loop: this many requests per second, spaced as --arrivals says; latency
    /// counts from when each request should have been sent.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: workers (connections) sharing the rate.
    #[arg(long, default_value_t = 64, requires = "rate", value_parser = clap::value_parser!(u64).range(1..100_000))]
    connections: u64,
    /// Open loop: how the send times are spaced, evenly (uniform) or as a Poisson
    /// process's arrivals (independent gaps, burstier).
    #[arg(long, value_enum, default_value = "uniform", requires = "rate")]
    arrivals: Arrivals,
    /// Which node gets each request: any (round robin), owner, or remote (not the owner).
    #[arg(long, value_enum, default_value = "any")]
    route: Route,
    /// Measured time.
    #[arg(long, default_value = "30s", value_parser = duration)]
    duration: Duration,
    /// Unmeasured time before it.
    #[arg(long, default_value = "5s", value_parser = duration)]
    warmup: Duration,
    /// A request failing to finish in this time counts as a `timeout` error.
    #[arg(long, default_value = "5s", value_parser = duration)]
    timeout: Duration,
    /// Seed of the key and operation choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Threads sending requests (default: one per core). loadgen shares the cores
    /// with the nodes it measures on one machine; one thread wakes no other thread per
    /// request and costs them the least.
    #[arg(long)]
    threads: Option<std::num::NonZeroU16>,
    /// Also write the result, with the full percentile curve and a per-second timeline.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct ClusterArgs {
    /// Nodes to start.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=32))]
    nodes: u64,
    /// Membership through an etcd this command starts (the default).
    #[arg(long, conflicts_with = "static_membership")]
    etcd: bool,
    /// Membership from a static peer list (no etcd; graceful-leave and scale-out are
    /// skipped).
    #[arg(long = "static")]
    static_membership: bool,
    /// Latency of the origin behind the nodes.
    #[arg(long, default_value = "5ms", value_parser = duration)]
    source_latency: Duration,
    /// Latency of the origin in the stampede.
    #[arg(long, default_value = "500ms", value_parser = duration)]
    stampede_latency: Duration,
    /// all, or a comma-separated list of: local-hit, local-hit-resp, remote-hit (runs
    /// remote-hit-hot too), remote-hit-hot, miss, zipf-mixed, stampede, hotspot, churn, stall,
    /// graceful-leave, scale-out, ceiling.
    #[arg(long, default_value = "all")]
    scenarios: String,
    /// Directory for cluster.md and cluster/.
    #[arg(long, default_value = "reports")]
    out: PathBuf,
    /// Short runs (1 s warm-up, 4 s measured; churn, stall, graceful-leave and scale-out
    /// 8 s, hotspot three runs of 4 s) and fewer keys: about a minute and a half in all.
    #[arg(long)]
    quick: bool,
    /// Measured time per scenario (default 30 s, 4 s with --quick).
    #[arg(long, value_parser = duration)]
    duration: Option<Duration>,
    /// Warm-up per scenario (default 5 s, 1 s with --quick).
    #[arg(long, value_parser = duration)]
    warmup: Option<Duration>,
    /// Requests in flight in the closed-loop scenarios.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..10_000))]
    concurrency: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Cold keys in the stampede.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..100))]
    stampede_keys: u64,
    /// Concurrent gets of each stampede key.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..10_000))]
    stampede_clients: u64,
    /// The peercache binary (default: `peercache` next to this one).
    #[arg(long, env = "PEERCACHE_BIN")]
    peercache_bin: Option<PathBuf>,
    /// The etcd binary.
    #[arg(long, env = "ETCD_BIN", default_value = "etcd")]
    etcd_bin: PathBuf,
    /// Seed of the key choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Mutual TLS between the nodes (certificates made with `peercache certs`).
    #[arg(long)]
    peer_tls: bool,
    /// HTTPS on the nodes' client API, with the same certificates.
    #[arg(long)]
    client_tls: bool,
}

/// mimalloc, as the nodes: loadgen shares the machine's cores with them, and every
/// microsecond it spends is one they do not get.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Command::Run(RunArgs {
        threads: Some(n), ..
    }) = &cli.command
    {
        runtime.worker_threads(n.get().into());
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run_cmd(args).await,
            Command::Cluster(args) => cluster_cmd(args).await,
            Command::CeilingServer {
                addr,
                value_size,
                forward,
            } => origin::serve_ceiling(&addr, value_size, forward).await,
        }
    })
}

impl RunArgs {
    /// The targets' base URLs.
    fn urls(&self) -> anyhow::Result<Vec<String>> {
        for t in &self.target {
            if self.protocol == Protocol::Resp {
                if !t.starts_with("redis://") {
                    bail!(
                        "--target {t:?}: with --protocol resp give the node's Redis address, like redis://127.0.0.1:6381"
                    );
                }
                continue;
            }
            if !t.starts_with("http://") && !t.starts_with("https://") {
                bail!("--target {t:?}: give the node's HTTP base URL, like http://127.0.0.1:8001");
            }
        }
        Ok(self
            .target
            .iter()
            .map(|t| t.trim_end_matches('/').to_owned())
            .collect())
    }

    /// Which node gets each request: over gRPC, always the key's owner.
    fn route(&self) -> anyhow::Result<Route> {
        Ok(match (self.protocol, self.route) {
            (Protocol::Grpc, Route::Remote) => {
                bail!("--protocol grpc sends each request to its owner; --route remote needs http")
            }
            (Protocol::Grpc, _) => Route::Owner,
            (Protocol::Resp, Route::Any) => Route::Any,
            (Protocol::Resp, _) => {
                bail!(
                    "--protocol resp spreads requests over the targets; --route owner and remote need http"
                )
            }
            (Protocol::Http, r) => r,
        })
    }

    /// An open loop at `--rate`, else a closed one.
    fn load(&self) -> anyhow::Result<Load> {
        Ok(match self.rate {
            Some(rate) if !(rate.is_finite() && rate > 0.0) => {
                bail!("--rate must be a positive number of requests per second")
            }
            Some(rate) => Load::Open {
                rate,
                connections: self.connections as usize,
                arrivals: self.arrivals,
            },
            None => Load::Closed {
                concurrency: self.concurrency.unwrap_or(32) as usize,
            },
        })
    }
}

async fn run_cmd(a: RunArgs) -> anyhow::Result<()> {
    let (urls, route, load) = (a.urls()?, a.route()?, a.load()?);
    raise_open_files(load.workers() * 2 + 256)?;
    if let Some(ca) = &a.ca {
        let pem = std::fs::read(ca).with_context(|| format!("--ca {}", ca.display()))?;
        client::trust_ca(&pem)?;
    }
    let http = crate::client::http_builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let targets = if route == Route::Any && a.protocol != Protocol::Grpc {
        Targets::plain(urls)
    } else {
        Targets::discover(&http, urls)
            .await
            .context("reading the targets' rings")?
    };
    let targets = Arc::new(targets);
    let client = Arc::new(Client::new(
        a.protocol,
        &targets,
        &a.group,
        a.timeout,
        load.workers(),
    )?);
    let cfg = RunConfig {
        label: "run".into(),
        group: a.group,
        keys: a.keys,
        workload: a.workload,
        mix: a.mix,
        value_size: a.value_size,
        route,
        load,
        duration: a.duration,
        warmup: a.warmup,
        seed: a.seed,
        progress: true,
    };
    eprintln!(
        "loadgen: {} {} over {} target(s), {}, {} keys, {}, {:?} (+{:?} warm-up)",
        serde_json::to_string(&cfg.load)?,
        cfg.mix,
        targets.urls.len(),
        cfg.workload,
        cfg.keys,
        route,
        cfg.duration,
        cfg.warmup
    );
    let report = run::run_client(&cfg, targets, client).await;
    print!("{}", run::table(&report));
    if let Some(path) = a.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Raises the open-files limit to what `needed` connections take, or fails saying so.
fn raise_open_files(needed: usize) -> anyhow::Result<()> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    if (limit as usize) < needed {
        bail!(
            "this needs about {needed} open files but the limit is {limit}; raise it (ulimit -n) or ask for fewer connections"
        );
    }
    Ok(())
}

impl ClusterArgs {
    /// The run these arguments ask for.
    fn settings(self) -> anyhow::Result<cluster::Settings> {
        let scenarios = cluster::select(&self.scenarios)?;
        let peercache_bin = match self.peercache_bin {
            Some(bin) => bin,
            None => std::env::current_exe()?
                .parent()
                .context("the loadgen binary has no directory")?
                .join("peercache"),
        };
        let quick = self.quick;
        Ok(cluster::Settings {
            nodes: self.nodes as usize,
            etcd: !self.static_membership,
            source_latency: self.source_latency,
            stampede_latency: self.stampede_latency,
            scenarios,
            duration: self
                .duration
                .unwrap_or(Duration::from_secs(if quick { 4 } else { 30 })),
            warmup: self
                .warmup
                .unwrap_or(Duration::from_secs(if quick { 1 } else { 5 })),
            concurrency: self.concurrency as usize,
            keys: if quick { 1_000 } else { 10_000 },
            zipf_keys: if quick { 10_000 } else { 100_000 },
            value_size: self.value_size,
            stampede_keys: self.stampede_keys,
            stampede_clients: self.stampede_clients as usize,
            peercache_bin,
            etcd_bin: self.etcd_bin,
            seed: self.seed,
            peer_tls: self.peer_tls,
            client_tls: self.client_tls,
        })
    }
}

async fn cluster_cmd(a: ClusterArgs) -> anyhow::Result<()> {
    let out = a.out.clone();
    let settings = a.settings()?;
    raise_open_files(settings.stampede_keys as usize * settings.stampede_clients * 2 + 1024)?;
    let setup = settings.describe();
    let machine = report::Facts::machine();
    let dir = std::env::temp_dir().join(format!("loadgen-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    eprintln!("loadgen cluster: {setup}; logs in {}", dir.display());
    let outcomes = cluster::run_all(settings, dir.clone())
        .await
        .with_context(|| format!("node and etcd logs are in {}", dir.display()))?;
    let facts = report::Facts {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        setup,
        machine,
    };
    report::write(&out, &outcomes, &facts)?;
    print!("{}", report::text_table(&outcomes));
    println!("reports: {}/cluster.md", out.display());
    let failed: Vec<String> = outcomes
        .iter()
        .flat_map(|o| {
            o.checks
                .iter()
                .filter(|c| !c.passed)
                .map(move |c| format!("{}: {}", o.name, c.what))
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "checks failed (logs in {}):\n  {}",
            dir.display(),
            failed.join("\n  ")
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
