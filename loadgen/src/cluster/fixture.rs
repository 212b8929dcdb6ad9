//! What the scenarios run on: a [`Cluster`] of `peercache serve` nodes behind a fresh
//! counting origin, and [`Ctx`], what every scenario shares (settings, an HTTP client,
//! etcd) and how it loads the nodes.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::outcome::{Counters, Outcome, Tally};
use super::{GROUP, Settings};
use crate::client::{Client, Protocol, Route, Targets, get_json};
use crate::keys::{Mix, Op, Workload};
use crate::origin::Origin;
use crate::procs::{Etcd, Membership, Node, NodeSetup, free_addr, until_rings_agree};
use crate::run::{Load, RunConfig, RunReport, run_client};
use crate::workload::key_name;

/// A running cluster and the origin behind it.
pub struct Cluster {
    /// The nodes, `node1` first.
    pub nodes: Vec<Node>,
    /// The origin every node loads from.
    pub origin: Origin,
    /// What the nodes were started with; a node added later gets the same.
    pub setup: NodeSetup,
}

impl Cluster {
    /// HTTP base URLs of nodes `which`.
    pub fn urls(&self, which: Range<usize>) -> Vec<String> {
        self.nodes[which].iter().map(|n| n.url.clone()).collect()
    }

    /// The group's counters summed over nodes `which`, and the origin's loads, now.
    pub async fn tally(&self, ctx: &Ctx, which: Range<usize>) -> anyhow::Result<Tally> {
        let mut counters = Counters::new();
        for node in &self.nodes[which] {
            let v = get_json(&ctx.http, &format!("{}/v1/stats", node.url)).await?;
            let group = v["groups"][GROUP]
                .as_object()
                .context("no group in /v1/stats")?;
            for (k, v) in group {
                *counters.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
        }
        Ok(Tally {
            counters,
            source_loads: self.origin.loads(),
        })
    }

    /// Redis-protocol addresses of nodes `which`.
    pub fn resp_addrs(&self, which: Range<usize>) -> Vec<String> {
        self.nodes[which].iter().map(|n| n.resp.clone()).collect()
    }

    /// Runs `cfg` over all nodes through the Redis protocol, with the counts around it
    /// in `o`.
    pub async fn measure_resp(
        &self,
        ctx: &Ctx,
        cfg: &RunConfig,
        o: &mut Outcome,
    ) -> anyhow::Result<RunReport> {
        let (urls, resp) = (
            self.urls(0..self.nodes.len()),
            self.resp_addrs(0..self.nodes.len()),
        );
        self.counted(ctx, o, ctx.load_resp(cfg, urls, &resp)).await
    }

    /// Runs `cfg` over all nodes, with the counts around it in `o`.
    pub async fn measure(
        &self,
        ctx: &Ctx,
        cfg: &RunConfig,
        o: &mut Outcome,
    ) -> anyhow::Result<RunReport> {
        self.counted(ctx, o, ctx.load(cfg, self.urls(0..self.nodes.len())))
            .await
    }

    /// Runs `load`, with the counts of all nodes around it in `o`.
    async fn counted(
        &self,
        ctx: &Ctx,
        o: &mut Outcome,
        load: impl std::future::Future<Output = anyhow::Result<RunReport>>,
    ) -> anyhow::Result<RunReport> {
        let all = 0..self.nodes.len();
        let before = self.tally(ctx, all.clone()).await?;
        let report = load.await?;
        o.counted(before, self.tally(ctx, all).await?);
        Ok(report)
    }

    /// Stops every node.
    pub async fn stop(mut self) {
        for node in &mut self.nodes {
            node.proc.stop().await;
        }
    }
}

/// Starts one more node with `setup` (etcd membership only) and waits until every ring
/// has it; returns how long the rings took.
pub async fn add_node(
    http: &reqwest::Client,
    nodes: &mut Vec<Node>,
    setup: &NodeSetup,
) -> anyhow::Result<Duration> {
    let name = format!("node{}", nodes.len() + 1);
    let mut node = Node::start(setup, &name, &free_addr()?, &free_addr()?, &[])?;
    node.until_healthy(http).await?;
    nodes.push(node);
    until_rings_agree(http, nodes, Duration::from_secs(10)).await
}

/// With TLS on (between peers or for clients), makes the nodes' certificates under
/// `dir` with `peercache certs` and returns their directory: one per node name (`node1`,
/// ...; a few spare for nodes added later), each naming its node and 127.0.0.1 (static
/// members are checked by their address's host, clients dial 127.0.0.1). With HTTPS, the
/// HTTP clients built afterwards trust their CA.
pub fn make_certs(s: &Settings, dir: &std::path::Path) -> anyhow::Result<Option<PathBuf>> {
    if !s.peer_tls && !s.client_tls {
        return Ok(None);
    }
    let certs = dir.join("certs");
    let mut cmd = std::process::Command::new(&s.peercache_bin);
    cmd.arg("certs").arg("--out").arg(&certs);
    for i in 1..=s.nodes + 4 {
        cmd.args(["--node", &format!("node{i}+127.0.0.1")]);
    }
    let made =
        (cmd.output()).with_context(|| format!("running {} certs", s.peercache_bin.display()))?;
    anyhow::ensure!(
        made.status.success(),
        "peercache certs failed: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    if s.client_tls {
        crate::client::trust_ca(&std::fs::read(certs.join("ca.pem"))?)?;
    }
    Ok(Some(certs))
}

/// What every scenario shares.
pub struct Ctx {
    /// The run's settings.
    pub s: Settings,
    /// For control calls (stats, rings, health).
    pub http: reqwest::Client,
    /// Where logs go.
    pub dir: PathBuf,
    /// The etcd the nodes find each other through, if membership is not static.
    pub etcd: Option<Etcd>,
    /// The nodes' certificates, with TLS on ([`make_certs`]).
    pub certs: Option<PathBuf>,
    clusters: usize,
}

impl Ctx {
    /// The context of a run with `s`, logging under `dir`.
    pub fn new(
        s: Settings,
        http: reqwest::Client,
        dir: PathBuf,
        etcd: Option<Etcd>,
        certs: Option<PathBuf>,
    ) -> Ctx {
        Ctx {
            s,
            http,
            dir,
            etcd,
            certs,
            clusters: 0,
        }
    }

    /// Starts the settings' nodes behind a fresh origin with `latency` (hot copies on with
    /// `hot`) and waits until every ring has every node.
    pub async fn cluster(&mut self, hot: bool, latency: Duration) -> anyhow::Result<Cluster> {
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
            certs: self.certs.clone(),
            peer_tls: self.s.peer_tls,
            https: self.s.client_tls,
        };
        std::fs::create_dir_all(&setup.dir)?;
        let mut nodes = self.start_nodes(&setup).await?;
        until_rings_agree(&self.http, &mut nodes, Duration::from_secs(20)).await?;
        Ok(Cluster {
            nodes,
            origin,
            setup,
        })
    }

    /// Starts the nodes on free ports and waits until each is healthy. A port picked
    /// free can be taken by another socket before the node binds it; then the nodes
    /// start again on other ports (three tries).
    async fn start_nodes(&self, setup: &NodeSetup) -> anyhow::Result<Vec<Node>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut addrs = Vec::new();
            for _ in 0..self.s.nodes {
                addrs.push((free_addr()?, free_addr()?));
            }
            let peers: Vec<String> = addrs.iter().map(|(g, _)| g.clone()).collect();
            let mut nodes = Vec::new();
            for (i, (grpc, http)) in addrs.iter().enumerate() {
                let name = format!("node{}", i + 1);
                nodes.push(Node::start(setup, &name, grpc, http, &peers)?);
            }
            let mut healthy = Ok(());
            for node in &mut nodes {
                healthy = node.until_healthy(&self.http).await;
                if healthy.is_err() {
                    break;
                }
            }
            match healthy {
                Ok(()) => return Ok(nodes),
                Err(_) if attempt < 3 && nodes.iter().any(|n| n.proc.lost_a_port()) => {
                    eprintln!(
                        "  (a node's port was taken before it bound it; starting the nodes again)"
                    );
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A closed-loop run of the settings' concurrency, duration and warm-up.
    pub fn config(
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
    pub async fn load(&self, cfg: &RunConfig, urls: Vec<String>) -> anyhow::Result<RunReport> {
        let targets = Targets::discover(&self.http, urls).await?;
        self.load_on(cfg, targets).await
    }

    /// Runs `cfg` over HTTP against `targets`.
    pub async fn load_on(&self, cfg: &RunConfig, targets: Targets) -> anyhow::Result<RunReport> {
        let timeout = Duration::from_secs(5);
        let client = Client::new(Protocol::Http, &targets, GROUP, timeout, cfg.load.workers())?;
        Ok(run_client(cfg, Arc::new(targets), Arc::new(client)).await)
    }

    /// Runs `cfg` over the Redis protocol against nodes `urls` (whose rings route it),
    /// reached at `resp`, node by node as `urls`.
    pub async fn load_resp(
        &self,
        cfg: &RunConfig,
        urls: Vec<String>,
        resp: &[String],
    ) -> anyhow::Result<RunReport> {
        let targets = Targets::discover(&self.http, urls).await?;
        let client = Client::resp(resp, GROUP, Duration::from_secs(5));
        Ok(run_client(cfg, Arc::new(targets), Arc::new(client)).await)
    }

    /// Gets keys `0..keys` once each through their owners; with `hot_copies`, also twice
    /// through every other node, which then keeps a hot copy.
    pub async fn warm(&self, urls: Vec<String>, keys: u64, hot_copies: bool) -> anyhow::Result<()> {
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
