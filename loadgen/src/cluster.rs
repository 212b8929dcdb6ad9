//! `loadgen cluster`: starts etcd (or not) and N nodes on loopback behind a slow,
//! counting origin, runs the scenarios, and collects what each one measured.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::client::{Client, Protocol, RingView, Route, Targets, get_json};
use crate::keys::{Mix, Op, Workload};
use crate::origin::Origin;
use crate::procs::{Etcd, Membership, Node, NodeSetup, Proc, free_port, until_rings_are};
use crate::run::{Load, RunConfig, RunReport, run_client};
use crate::stats::Recorder;
use crate::workload::key_name;

/// The scenarios, in the order they run.
pub const SCENARIOS: [&str; 9] = [
    "local-hit",
    "remote-hit",
    "remote-hit-hot",
    "miss",
    "zipf-mixed",
    "stampede",
    "churn",
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
    /// Measured time of a steady scenario (churn and scale-out run twice as long).
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// Closed-loop concurrency.
    pub concurrency: usize,
    /// Keys of the hit, churn and scale-out scenarios.
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
}

/// Counters of the group summed over nodes (`/v1/stats`).
pub type Counters = BTreeMap<String, u64>;

/// A check a scenario makes of its own result.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Check {
    /// What was expected.
    pub what: String,
    /// Whether it held.
    pub passed: bool,
}

/// What one scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Scenario name.
    pub name: String,
    /// What it does.
    pub about: String,
    /// Why it did not run, if it did not.
    pub skipped: Option<String>,
    /// The load and its latencies.
    pub run: Option<RunReport>,
    /// Node counters before and after the load, and the difference.
    pub stats_before: Counters,
    /// See `stats_before`.
    pub stats_after: Counters,
    /// See `stats_before`.
    pub stats_delta: Counters,
    /// Share of the nodes' client gets answered without the origin: 1 - source loads / gets.
    pub hit_ratio: Option<f64>,
    /// Gets a node answered by asking the key's owner.
    pub peer_loads: u64,
    /// Loads the origin counted.
    pub source_loads: u64,
    /// What it checked.
    pub checks: Vec<Check>,
    /// Findings for the report, one sentence each.
    pub notes: Vec<String>,
    /// Scenario-specific numbers.
    pub extra: Value,
}

impl Outcome {
    fn new(name: &str, about: &str) -> Outcome {
        Outcome {
            name: name.to_owned(),
            about: about.to_owned(),
            skipped: None,
            run: None,
            stats_before: Counters::new(),
            stats_after: Counters::new(),
            stats_delta: Counters::new(),
            hit_ratio: None,
            peer_loads: 0,
            source_loads: 0,
            checks: Vec::new(),
            notes: Vec::new(),
            extra: json!({}),
        }
    }

    fn check(&mut self, what: impl Into<String>, passed: bool) {
        self.checks.push(Check {
            what: what.into(),
            passed,
        });
    }

    /// Records the counters around the load and the origin's loads over it.
    fn counted(&mut self, before: Counters, after: Counters, source_loads: u64) {
        let delta: Counters = after
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.saturating_sub(before.get(k).copied().unwrap_or(0)),
                )
            })
            .collect();
        let gets = delta.get("gets").copied().unwrap_or(0);
        self.hit_ratio = (gets > 0).then(|| 1.0 - source_loads as f64 / gets as f64);
        self.peer_loads = delta.get("peer_loads").copied().unwrap_or(0);
        self.source_loads = source_loads;
        self.stats_before = before;
        self.stats_after = after;
        self.stats_delta = delta;
    }

    fn errors(&self) -> u64 {
        self.run.as_ref().map_or(0, |r| r.summary.errors)
    }
}

/// A running cluster and the origin behind it.
struct Cluster {
    nodes: Vec<Node>,
    origin: Origin,
    setup: NodeSetup,
}

impl Cluster {
    fn urls(&self, which: std::ops::Range<usize>) -> Vec<String> {
        self.nodes[which].iter().map(|n| n.url.clone()).collect()
    }

    fn ids(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.id.clone()).collect()
    }

    /// The group's counters summed over `which` nodes.
    async fn stats(&self, ctx: &Ctx, which: std::ops::Range<usize>) -> anyhow::Result<Counters> {
        let mut sum = Counters::new();
        for node in &self.nodes[which] {
            let v = get_json(&ctx.http, &format!("{}/v1/stats", node.url)).await?;
            let group = v["groups"][GROUP]
                .as_object()
                .context("no group in /v1/stats")?;
            for (k, v) in group {
                *sum.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
        }
        Ok(sum)
    }

    /// Runs `cfg` over all nodes, with the counters and origin loads around it in `o`.
    async fn measure(
        &self,
        ctx: &Ctx,
        cfg: &RunConfig,
        o: &mut Outcome,
    ) -> anyhow::Result<RunReport> {
        let all = 0..self.nodes.len();
        let (before, loads0) = (self.stats(ctx, all.clone()).await?, self.origin.loads());
        let report = ctx.load(cfg, self.urls(all.clone())).await?;
        let after = self.stats(ctx, all).await?;
        o.counted(before, after, self.origin.loads() - loads0);
        Ok(report)
    }

    async fn stop(mut self) {
        for node in &mut self.nodes {
            node.proc.stop().await;
        }
    }
}

/// What every scenario shares.
struct Ctx {
    s: Settings,
    http: reqwest::Client,
    dir: PathBuf,
    etcd: Option<Etcd>,
    clusters: usize,
}

impl Ctx {
    /// Starts `n` nodes behind a fresh origin with `latency` and waits for their rings.
    async fn cluster(&mut self, hot: bool, latency: Duration) -> anyhow::Result<Cluster> {
        self.clusters += 1;
        let origin = Origin::start(latency, self.s.value_size).await?;
        let membership = match &self.etcd {
            None => Membership::Static,
            Some(etcd) => Membership::Etcd {
                endpoint: etcd.endpoint.clone(),
                prefix: format!("/peercache/loadgen-{}/", self.clusters),
            },
        };
        let setup = NodeSetup {
            bin: self.s.peercache_bin.clone(),
            dir: self.dir.join(format!("cluster{}", self.clusters)),
            group: format!("{GROUP}:512MiB"),
            source: origin.template(),
            hot,
            membership,
        };
        std::fs::create_dir_all(&setup.dir)?;
        let mut addrs = Vec::new();
        for _ in 0..self.s.nodes {
            addrs.push((
                format!("127.0.0.1:{}", free_port()?),
                format!("127.0.0.1:{}", free_port()?),
            ));
        }
        let peers: Vec<String> = addrs.iter().map(|(g, _)| g.clone()).collect();
        let mut nodes = Vec::new();
        for (i, (grpc, http)) in addrs.iter().enumerate() {
            nodes.push(Node::start(
                &setup,
                &format!("node{}", i + 1),
                grpc,
                http,
                &peers,
            )?);
        }
        for node in &mut nodes {
            node.proc
                .until_ok(&self.http, &format!("{}/healthz", node.url))
                .await?;
        }
        let ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
        let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
        until_rings_are(&self.http, &mut all, &ids, Duration::from_secs(20)).await?;
        Ok(Cluster {
            nodes,
            origin,
            setup,
        })
    }

    fn config(
        &self,
        label: &str,
        workload: Workload,
        keys: u64,
        mix: Mix,
        route: Route,
    ) -> RunConfig {
        RunConfig {
            label: label.to_owned(),
            group: GROUP.to_owned(),
            keys,
            workload,
            mix,
            value_size: self.s.value_size,
            route,
            load: Load::Closed {
                concurrency: self.s.concurrency,
            },
            duration: self.s.duration,
            warmup: self.s.warmup,
            seed: self.s.seed,
            progress: true,
        }
    }

    /// Runs `cfg` over HTTP against `urls`.
    async fn load(&self, cfg: &RunConfig, urls: Vec<String>) -> anyhow::Result<RunReport> {
        let targets = Targets::discover(&self.http, urls).await?;
        self.load_on(cfg, targets).await
    }

    /// Runs `cfg` over HTTP against `targets`.
    async fn load_on(&self, cfg: &RunConfig, targets: Targets) -> anyhow::Result<RunReport> {
        let timeout = Duration::from_secs(5);
        let client = Client::new(Protocol::Http, &targets, GROUP, timeout, cfg.load.workers())?;
        Ok(run_client(cfg, Arc::new(targets), Arc::new(client)).await)
    }

    /// Gets keys `0..keys` once each through their owners; with `hot_copies`, also twice
    /// through every other node, which then keeps a hot copy.
    async fn warm(&self, urls: Vec<String>, keys: u64, hot_copies: bool) -> anyhow::Result<()> {
        let targets = Targets::discover(&self.http, urls).await?;
        let client = Client::new(Protocol::Http, &targets, GROUP, Duration::from_secs(10), 32)?;
        let (targets, client, none) = (&targets, &client, &Bytes::new());
        let owner = |key: &str, id: u64| {
            targets.pick(
                Route::Owner,
                key,
                id as usize,
                &mut SmallRng::seed_from_u64(id),
            )
        };
        let n = targets.urls.len();
        let gets = (0..keys).flat_map(|id| {
            let key = key_name(id);
            let o = owner(&key, id);
            let others = (0..n).filter(move |t| hot_copies && *t != o);
            std::iter::once((key.clone(), o, 1)).chain(others.map(move |t| (key.clone(), t, 2)))
        });
        futures::stream::iter(gets)
            .map(|(key, to, times)| async move {
                for _ in 0..times {
                    client.call(to, Op::Get, &key, none).await?;
                }
                Ok::<(), String>(())
            })
            .buffer_unordered(32)
            .try_collect::<Vec<()>>()
            .await
            .map_err(|kind| anyhow::anyhow!("warming the cache failed: {kind}"))?;
        Ok(())
    }
}

/// Runs the selected scenarios; returns their outcomes in order.
pub async fn run_all(s: Settings, dir: PathBuf) -> anyhow::Result<Vec<Outcome>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let etcd = if s.etcd {
        let etcd = Etcd::start(&s.etcd_bin, &dir, &http).await?;
        eprintln!("== etcd up at {}", etcd.endpoint);
        Some(etcd)
    } else {
        None
    };
    let mut ctx = Ctx {
        s,
        http,
        dir,
        etcd,
        clusters: 0,
    };
    let mut outcomes: Vec<Outcome> = Vec::new();
    let names = ctx.s.scenarios.clone();
    let mut result = Ok(());
    for name in &names {
        eprintln!("== {name}");
        let outcome = match name.as_str() {
            "local-hit" => hits(&mut ctx, Route::Owner, false).await,
            "remote-hit" => hits(&mut ctx, Route::Remote, false).await,
            "remote-hit-hot" => hits(&mut ctx, Route::Remote, true).await,
            "miss" => miss(&mut ctx).await,
            "zipf-mixed" => zipf_mixed(&mut ctx).await,
            "stampede" => stampede(&mut ctx).await,
            "churn" => churn(&mut ctx).await,
            "scale-out" => scale_out(&mut ctx).await,
            "ceiling" => ceiling(&mut ctx, outcomes.iter().find(|o| o.name == "local-hit")).await,
            other => Err(anyhow::anyhow!("unknown scenario {other}")),
        };
        match outcome {
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

/// local-hit, remote-hit, remote-hit-hot: warmed keys, each get sent to the owner or
/// to another node.
async fn hits(ctx: &mut Ctx, route: Route, hot: bool) -> anyhow::Result<Outcome> {
    let (name, about) = match (route, hot) {
        (Route::Owner, _) => (
            "local-hit",
            "warmed keys, each get sent to the key's owner: a local hit every time",
        ),
        (_, false) => (
            "remote-hit",
            "warmed keys, each get sent to a node that does not own the key; hot copies off, so every get is a peer hop",
        ),
        (_, true) => (
            "remote-hit-hot",
            "as remote-hit with hot copies on: a value fetched twice from its owner is kept for 10 s, and the warm-up fetched every key twice through every node",
        ),
    };
    let mut o = Outcome::new(name, about);
    let c = ctx.cluster(hot, ctx.s.source_latency).await?;
    let urls = c.urls(0..c.nodes.len());
    ctx.warm(urls.clone(), ctx.s.keys, hot).await?;
    let cfg = ctx.config(name, Workload::Uniform, ctx.s.keys, Mix::GETS, route);
    let report = c.measure(ctx, &cfg, &mut o).await?;
    o.run = Some(report);
    o.check("no errors", o.errors() == 0);
    o.check("no source loads: every key was warmed", o.source_loads == 0);
    let gets = o.stats_delta.get("gets").copied().unwrap_or(0);
    match (route, hot) {
        (Route::Owner, _) => o.check("no peer hops", o.peer_loads == 0),
        (_, false) => {
            // Concurrent gets of one key on one node share one peer call.
            let joined = o.stats_delta.get("loads_deduped").copied().unwrap_or(0);
            o.notes.push(format!(
                "{gets} gets: {} peer calls, {joined} joined a call in flight",
                o.peer_loads
            ));
            o.check(
                "every get is a peer call or joins one",
                o.peer_loads + joined == gets,
            );
        }
        (_, true) => {
            let hot_hits = o.stats_delta.get("hot_hits").copied().unwrap_or(0);
            o.notes.push(format!(
                "{hot_hits} of {gets} gets were answered from hot copies, {} went to the owner",
                o.peer_loads
            ));
            o.check("most gets are hot hits", hot_hits * 2 > gets);
        }
    }
    c.stop().await;
    Ok(o)
}

/// miss: every get asks for a key never asked before.
async fn miss(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let mut o = Outcome::new(
        "miss",
        "every get asks for a new key (a scan), so each one is loaded from the slow origin by the key's owner",
    );
    let c = ctx.cluster(false, ctx.s.source_latency).await?;
    let cfg = ctx.config("miss", Workload::Scan, 1 << 40, Mix::GETS, Route::Any);
    let report = c.measure(ctx, &cfg, &mut o).await?;
    let per_key = c.origin.per_key();
    let most = per_key.values().copied().max().unwrap_or(0);
    let bound = ctx.s.concurrency as f64 / ctx.s.source_latency.as_secs_f64().max(1e-3);
    o.notes.push(format!(
        "{} distinct keys asked, {} origin loads, at most {most} per key; the origin allows at most {bound:.0} gets/s at concurrency {} and {:?} per load",
        report.sent, o.source_loads, ctx.s.concurrency, ctx.s.source_latency
    ));
    o.check("no errors", report.summary.errors == 0);
    o.check(
        "origin loads == distinct keys asked",
        o.source_loads == report.sent,
    );
    o.check("no key loaded twice", most == 1);
    o.extra = json!({ "distinct_keys": report.sent, "most_loads_of_one_key": most, "qps_bound_by_source": bound });
    o.run = Some(report);
    c.stop().await;
    Ok(o)
}

/// zipf-mixed: YCSB-B-like.
async fn zipf_mixed(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let mut o = Outcome::new(
        "zipf-mixed",
        "zipf 0.99 over the key space, 95 % gets and 5 % sets (YCSB-B-like), cold start, hot copies on",
    );
    let c = ctx.cluster(true, ctx.s.source_latency).await?;
    let mix: Mix = "get=95,set=5".parse().map_err(anyhow::Error::msg)?;
    let cfg = ctx.config(
        "zipf-mixed",
        Workload::Zipf(0.99),
        ctx.s.zipf_keys,
        mix,
        Route::Any,
    );
    let report = c.measure(ctx, &cfg, &mut o).await?;
    o.check("no errors", report.summary.errors == 0);
    o.run = Some(report);
    c.stop().await;
    Ok(o)
}

/// stampede: thousands of concurrent gets of a few cold keys, over all nodes.
async fn stampede(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let (keys, clients) = (ctx.s.stampede_keys, ctx.s.stampede_clients);
    let mut o = Outcome::new(
        "stampede",
        &format!(
            "{clients} concurrent gets of each of {keys} cold keys, sent at once round robin over all nodes; the origin takes {:?} per load",
            ctx.s.stampede_latency
        ),
    );
    let c = ctx.cluster(false, ctx.s.stampede_latency).await?;
    let urls = c.urls(0..c.nodes.len());
    let (before, loads0) = (c.stats(ctx, 0..c.nodes.len()).await?, c.origin.loads());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?;
    let total = keys as usize * clients;
    let barrier = Arc::new(tokio::sync::Barrier::new(total));
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        // Key i mod K through node (i / K) mod N: every key reaches every node.
        let (key, node) = (i as u64 % keys, (i / keys as usize) % urls.len());
        let url = format!("{}/v1/groups/{GROUP}/keys/{}", urls[node], key_name(key));
        let (http, barrier) = (http.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let sent = Instant::now();
            let resp = http.get(url).send().await;
            let result = match resp {
                Ok(r) if r.status().is_success() => {
                    r.bytes().await.map(drop).map_err(|_| "io".to_owned())
                }
                Ok(r) => Err(format!("http {}", r.status().as_u16())),
                Err(e) if e.is_timeout() => Err("timeout".to_owned()),
                Err(e) if e.is_connect() => Err("connect".to_owned()),
                Err(_) => Err("io".to_owned()),
            };
            (sent, sent.elapsed(), result)
        }));
    }
    let mut rec = Recorder::default();
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    for task in tasks {
        let (sent, latency, result) = task.await?;
        first = Some(first.map_or(sent, |f| f.min(sent)));
        last = Some(last.map_or(sent + latency, |l| l.max(sent + latency)));
        match result {
            Ok(()) => rec.ok(latency),
            Err(kind) => rec.error(&kind),
        }
    }
    let elapsed = last.zip(first).map_or(Duration::ZERO, |(l, f)| l - f);
    let after = c.stats(ctx, 0..c.nodes.len()).await?;
    o.counted(before, after, c.origin.loads() - loads0);
    let per_key: BTreeMap<String, u64> = (0..keys)
        .map(|id| {
            let key = key_name(id);
            let n = c.origin.per_key().get(&key).copied().unwrap_or(0);
            (key, n)
        })
        .collect();
    let summary = rec.summary(elapsed);
    o.check("no errors", summary.errors == 0);
    o.check(
        "exactly one origin load per key",
        per_key.values().all(|n| *n == 1),
    );
    let deduped = o.stats_delta.get("loads_deduped").copied().unwrap_or(0);
    o.notes.push(format!(
        "origin loads per key: {}; {deduped} gets joined a load or peer call already in flight on their node; {} peer calls",
        per_key
            .values()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        o.peer_loads
    ));
    o.extra =
        json!({ "loads_per_key": per_key, "gets": total, "elapsed_s": elapsed.as_secs_f64() });
    let cfg = RunConfig {
        load: Load::Closed { concurrency: total },
        duration: elapsed,
        warmup: Duration::ZERO,
        ..ctx.config("stampede", Workload::Uniform, keys, Mix::GETS, Route::Any)
    };
    o.run = Some(RunReport {
        config: cfg,
        summary,
        sent: total as u64,
        timeline: Vec::new(),
    });
    c.stop().await;
    Ok(o)
}

/// Samples the origin's load count once a second from `start` for `secs` seconds:
/// element `i` is the loads during second `i`.
async fn loads_per_second(origin: &Origin, start: Instant, secs: u64) -> Vec<u64> {
    let mut tick = tokio::time::interval_at(start, Duration::from_secs(1));
    let mut prev = None;
    let mut out = Vec::new();
    for _ in 0..=secs {
        tick.tick().await;
        let now = origin.loads();
        if let Some(p) = prev {
            out.push(now - p);
        }
        prev = Some(now);
    }
    out
}

/// Origin loads around an event at `at` seconds: the most in a second before it, the
/// most in a second after it, and the total after it. The second just before the event
/// counts as after: the sampler's seconds are only roughly aligned with the run's.
fn spike(per_second: &[u64], at: f64) -> (u64, u64, u64) {
    let split = (at.floor() as usize)
        .saturating_sub(1)
        .min(per_second.len());
    let (before, after) = per_second.split_at(split);
    let most = |s: &[u64]| s.iter().copied().max().unwrap_or(0);
    (most(before), most(after), after.iter().sum())
}

/// The seconds of `report` with errors: (first, last).
fn error_span(report: &RunReport) -> Option<(u64, u64)> {
    let mut with = report.timeline.iter().filter(|s| s.errors > 0).map(|s| s.t);
    let first = with.next()?;
    Some((first, with.next_back().unwrap_or(first)))
}

/// churn: kill -9 one node a third into the run; the load goes to the others.
async fn churn(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let mut o = Outcome::new(
        "churn",
        "warmed uniform gets to all nodes but one; that node is killed (SIGKILL) a third into the run",
    );
    let mut c = ctx.cluster(false, ctx.s.source_latency).await?;
    let n = c.nodes.len();
    if n < 2 {
        bail!("churn needs at least 2 nodes");
    }
    let survivors = c.urls(0..n - 1);
    ctx.warm(c.urls(0..n), ctx.s.keys, false).await?;
    let ring = RingView::fetch(&ctx.http, &survivors[0]).await?.ring;
    let victim_id = c.nodes[n - 1].id.clone();
    let victim_keys = (0..ctx.s.keys)
        .filter(|id| {
            ring.owner(&key_name(*id))
                .is_some_and(|m| m.id == victim_id)
        })
        .count() as u64;
    let mut cfg = ctx.config(
        "churn",
        Workload::Uniform,
        ctx.s.keys,
        Mix::GETS,
        Route::Any,
    );
    cfg.duration = ctx.s.duration * 2;
    let kill_after = cfg.duration / 3;
    let (before, loads0) = (c.stats(ctx, 0..n - 1).await?, c.origin.loads());
    let measure = Instant::now() + cfg.warmup;
    let secs = cfg.duration.as_secs();
    let survivor_ids: Vec<String> = c.ids()[..n - 1].to_vec();
    let ctx = &*ctx;
    let (report, per_second, converged) = {
        let (nodes, origin) = (&mut c.nodes, &c.origin);
        let event = async {
            tokio::time::sleep_until(measure + kill_after).await;
            let (alive, victim) = nodes.split_at_mut(n - 1);
            victim[0].proc.kill9();
            let killed = Instant::now();
            let mut alive: Vec<&mut Node> = alive.iter_mut().collect();
            let limit = Duration::from_secs(15);
            let gone = until_rings_are(&ctx.http, &mut alive, &survivor_ids, limit).await;
            gone.ok().map(|_| killed.elapsed())
        };
        tokio::join!(
            ctx.load(&cfg, survivors),
            loads_per_second(origin, measure, secs),
            event
        )
    };
    let report = report?;
    let after = c.stats(ctx, 0..n - 1).await?;
    o.counted(before, after, c.origin.loads() - loads0);
    let kill_s = kill_after.as_secs_f64();
    let span = error_span(&report);
    o.notes.push(format!(
        "killed {victim_id} at t={kill_s:.1}s; it owned {victim_keys} of the {} keys",
        ctx.s.keys
    ));
    o.notes.push(match span {
        None => "no request failed".to_owned(),
        Some((a, b)) => format!(
            "{} requests failed, in seconds t={a}..{b}; none after t={}s ({:.1} s after the kill)",
            report.summary.errors,
            b + 1,
            (b + 1) as f64 - kill_s
        ),
    });
    o.notes.push(match converged {
        Some(d) => format!("the survivors' rings dropped {victim_id} {:.2} s after the kill", d.as_secs_f64()),
        None if ctx.etcd.is_none() => format!("static membership: {victim_id} stays in the rings; its keys are loaded by whoever is asked, each kept for the 1 s fallback TTL"),
        None => format!("the survivors' rings still had {victim_id} 15 s after the kill"),
    });
    let (base, peak, after_kill) = spike(&per_second, kill_s);
    let peer_errors = o.stats_delta.get("peer_errors").copied().unwrap_or(0);
    o.notes.push(format!(
        "origin loads per second: at most {base} before the kill, peak {peak} after it; {after_kill} loads from the second before the kill on, for {victim_keys} orphaned keys"
    ));
    if ctx.etcd.is_some() {
        o.notes.push(format!(
            "until the rings drop the dead node, a survivor whose peer call fails ({peer_errors} peer errors) loads the key itself and keeps it only for the 1 s fallback TTL, so orphaned keys are loaded about once a second per survivor; then their new owners load them once"
        ));
        o.check("the rings drop the killed node", converged.is_some());
    }
    o.extra = json!({
        "event": "kill -9", "event_at_s": kill_s, "victim": victim_id, "victim_keys": victim_keys,
        "error_seconds": span, "ring_converged_after_s": converged.map(|d| d.as_secs_f64()),
        "source_loads_per_second": per_second,
    });
    o.run = Some(report);
    c.stop().await;
    Ok(o)
}

/// scale-out: start one more node a third into the run.
async fn scale_out(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let mut o = Outcome::new(
        "scale-out",
        "warmed uniform gets to all nodes; one more node joins (through etcd) a third into the run",
    );
    if ctx.etcd.is_none() {
        o.skipped =
            Some("needs --etcd: a static peer list is fixed when the nodes start".to_owned());
        return Ok(o);
    }
    let mut c = ctx.cluster(false, ctx.s.source_latency).await?;
    let n = c.nodes.len();
    let urls = c.urls(0..n);
    ctx.warm(urls.clone(), ctx.s.keys, false).await?;
    let ring_before = RingView::fetch(&ctx.http, &urls[0]).await?.ring;
    let mut cfg = ctx.config(
        "scale-out",
        Workload::Uniform,
        ctx.s.keys,
        Mix::GETS,
        Route::Any,
    );
    cfg.duration = ctx.s.duration * 2;
    let add_after = cfg.duration / 3;
    let (before, loads0) = (c.stats(ctx, 0..n).await?, c.origin.loads());
    let measure = Instant::now() + cfg.warmup;
    let secs = cfg.duration.as_secs();
    let ctx = &*ctx;
    let (report, per_second, joined) = {
        let (nodes, origin, setup) = (&mut c.nodes, &c.origin, &c.setup);
        let event = async {
            tokio::time::sleep_until(measure + add_after).await;
            let added = Instant::now();
            // Converged: from starting the process until every ring has it.
            add_node(ctx, nodes, setup)
                .await
                .map(|_| (added - measure, added.elapsed()))
        };
        tokio::join!(
            ctx.load(&cfg, urls),
            loads_per_second(origin, measure, secs),
            event
        )
    };
    let report = report?;
    let (added_at, converged) = joined?;
    let after = c.stats(ctx, 0..n).await?;
    o.counted(before, after, c.origin.loads() - loads0);
    let ring_after = RingView::fetch(&ctx.http, &c.nodes[0].url).await?.ring;
    let new_id = c.nodes[n].id.clone();
    let moved = (0..ctx.s.keys)
        .filter(|id| {
            let key = key_name(*id);
            ring_before.owner(&key).map(|m| &m.id) != ring_after.owner(&key).map(|m| &m.id)
        })
        .count() as u64;
    let to_new = (0..ctx.s.keys)
        .filter(|id| {
            ring_after
                .owner(&key_name(*id))
                .is_some_and(|m| m.id == new_id)
        })
        .count() as u64;
    let add_s = added_at.as_secs_f64();
    let (base, peak, after_add) = spike(&per_second, add_s);
    o.notes.push(format!(
        "started {new_id} at t={add_s:.1}s; {:.2} s later it was serving and in every ring",
        converged.as_secs_f64()
    ));
    o.notes.push(format!(
        "{moved} of {} keys ({:.1} %) changed owner, all of them to {new_id} ({to_new}); ideal share 1/{} = {:.1} %",
        ctx.s.keys,
        100.0 * moved as f64 / ctx.s.keys as f64,
        n + 1,
        100.0 / (n + 1) as f64
    ));
    o.notes.push(format!(
        "origin loads per second: at most {base} before, peak {peak} after; {after_add} loads from the second before the join on, for {moved} moved keys"
    ));
    o.notes.push(match error_span(&report) {
        None => "no request failed".to_owned(),
        Some((a, b)) => format!(
            "{} requests failed, in seconds t={a}..{b}",
            report.summary.errors
        ),
    });
    o.check("no errors", report.summary.errors == 0);
    o.check("only keys of the new node moved", moved == to_new);
    o.extra = json!({
        "event": "node added", "event_at_s": add_s, "new_node": new_id,
        "ring_converged_after_s": converged.as_secs_f64(),
        "keys": ctx.s.keys, "keys_moved": moved, "source_loads_per_second": per_second,
    });
    o.run = Some(report);
    c.stop().await;
    Ok(o)
}

/// Starts one more node (etcd membership only) and waits until every ring has it.
async fn add_node(ctx: &Ctx, nodes: &mut Vec<Node>, setup: &NodeSetup) -> anyhow::Result<Duration> {
    let name = format!("node{}", nodes.len() + 1);
    let grpc = format!("127.0.0.1:{}", free_port()?);
    let http = format!("127.0.0.1:{}", free_port()?);
    let mut node = Node::start(setup, &name, &grpc, &http, &[])?;
    node.proc
        .until_ok(&ctx.http, &format!("{}/healthz", node.url))
        .await?;
    nodes.push(node);
    let ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
    let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
    until_rings_are(&ctx.http, &mut all, &ids, Duration::from_secs(10)).await
}

/// ceiling: the local-hit loop against a server that answers a constant.
async fn ceiling(ctx: &mut Ctx, local: Option<&Outcome>) -> anyhow::Result<Outcome> {
    let mut o = Outcome::new(
        "ceiling",
        "the local-hit loop against a constant-answer handler on the same HTTP stack (axum, multi-threaded tokio), one process: the floor of the framework",
    );
    let addr = format!("127.0.0.1:{}", free_port()?);
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "ceiling-server",
        "--addr",
        &addr,
        "--value-size",
        &ctx.s.value_size.to_string(),
    ]);
    let mut server = Proc::spawn("ceiling", cmd, &ctx.dir)?;
    let url = format!("http://{addr}");
    server
        .until_ok(&ctx.http, &format!("{url}/v1/groups/{GROUP}/keys/k"))
        .await?;
    let cfg = ctx.config(
        "ceiling",
        Workload::Uniform,
        ctx.s.keys,
        Mix::GETS,
        Route::Any,
    );
    let report = ctx.load_on(&cfg, Targets::plain(vec![url])).await?;
    server.stop().await;
    o.check("no errors", report.summary.errors == 0);
    if let Some(local) = local.and_then(|l| l.run.as_ref()) {
        let (ours, floor) = (&local.summary, &report.summary);
        let qps = ours.qps / floor.qps.max(1e-9);
        let p50 = ours.latency_ms.p50 / floor.latency_ms.p50.max(1e-9);
        let p99 = ours.latency_ms.p99 / floor.latency_ms.p99.max(1e-9);
        o.notes.push(format!(
            "local-hit reaches {qps:.2}× the ceiling's QPS, at {p50:.2}× its P50 and {p99:.2}× its P99"
        ));
        o.extra = json!({ "local_hit_qps_ratio": qps, "local_hit_p50_ratio": p50, "local_hit_p99_ratio": p99 });
    }
    o.run = Some(report);
    Ok(o)
}
