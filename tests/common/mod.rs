//! A cluster of real nodes on loopback sockets (ports chosen by the OS), and a shared
//! pretend database to load from.

#![allow(dead_code)] // each test binary uses part of this

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use peercache::net::Net;
use peercache::{
    Error, Group, HotConfig, Loader, Node, NodeConfig, Registry, Result, StaticDiscovery, TokioNet,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod process;

/// The source of truth every node loads from: `v:<key>` unless a writer changed the key,
/// with a count of loads per key.
#[derive(Clone, Default)]
pub struct Db {
    inner: Arc<Mutex<DbInner>>,
}

#[derive(Default)]
struct DbInner {
    written: BTreeMap<String, Option<Bytes>>,
    loads: BTreeMap<String, u64>,
}

impl Db {
    /// A writer's update (cache-aside: the source first, then the cache).
    pub fn write(&self, key: &str, value: Option<&str>) {
        let value = value.map(|v| Bytes::from(v.to_owned()));
        self.inner.lock().written.insert(key.to_owned(), value);
    }

    /// Loads of `key` so far, cluster-wide.
    pub fn loads(&self, key: &str) -> u64 {
        self.inner.lock().loads.get(key).copied().unwrap_or(0)
    }

    /// All loads so far.
    pub fn total_loads(&self) -> u64 {
        self.inner.lock().loads.values().sum()
    }
}

#[async_trait::async_trait]
impl Loader for Db {
    async fn load(&self, key: &str) -> Result<Bytes> {
        let mut db = self.inner.lock();
        *db.loads.entry(key.to_owned()).or_default() += 1;
        match db.written.get(key) {
            Some(Some(v)) => Ok(v.clone()),
            Some(None) => Err(Error::NotFound(format!("{key} was deleted"))),
            None => Ok(Bytes::from(format!("v:{key}"))),
        }
    }
}

/// One running node.
pub struct TestNode {
    /// Member id and gRPC address.
    pub id: String,
    /// Base URL of its HTTP API.
    pub url: String,
    /// Its groups, for looking inside.
    pub groups: Registry,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<()>>>,
}

impl TestNode {
    /// The group called `name`.
    pub fn group(&self, name: &str) -> Group {
        self.groups.get(name).expect("group configured by the test")
    }

    /// Graceful shutdown; waits until the node has drained and stopped.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("node task")
                .expect("node stopped cleanly");
        }
    }

    /// Starts the shutdown without waiting for it.
    pub fn begin_stop(&mut self) -> JoinHandle<Result<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().expect("node is running")
    }
}

/// Nodes that list each other as static peers.
pub struct Cluster {
    pub nodes: Vec<TestNode>,
}

impl Cluster {
    /// Starts `n` nodes; `setup(i, registry)` creates node `i`'s groups.
    pub async fn start(n: usize, setup: impl Fn(usize, &Registry)) -> Cluster {
        let mut bound = Vec::new();
        for _ in 0..n {
            let grpc = TokioNet.bind("127.0.0.1:0").await.expect("bind gRPC");
            let http = TokioNet.bind("127.0.0.1:0").await.expect("bind HTTP");
            bound.push((grpc, http));
        }
        let ids: Vec<String> = bound
            .iter()
            .map(|(g, _)| g.local_addr().unwrap().to_string())
            .collect();
        let mut nodes = Vec::new();
        for (i, (grpc, http)) in bound.into_iter().enumerate() {
            nodes.push(spawn_node(i, &ids, grpc, http, &setup));
        }
        let cluster = Cluster { nodes };
        for node in &cluster.nodes {
            wait_healthy(&node.url).await;
        }
        cluster
    }

    /// Starts node `i` again, empty, on its old addresses (after [`TestNode::stop`]).
    pub async fn restart(&mut self, i: usize, setup: impl Fn(usize, &Registry)) {
        let ids: Vec<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
        let grpc = TokioNet.bind(&ids[i]).await.expect("rebind gRPC");
        let http = TokioNet
            .bind(self.nodes[i].url.trim_start_matches("http://"))
            .await
            .expect("rebind HTTP");
        self.nodes[i] = spawn_node(i, &ids, grpc, http, &setup);
        wait_healthy(&self.nodes[i].url).await;
    }

    /// Index of the node that owns `key` (as node 0 sees the ring).
    pub fn owner(&self, key: &str) -> usize {
        let picker = self.nodes[0].groups.peers().expect("node 0 is running");
        let view = picker.view();
        let owner = &view.ring.owner(key).expect("a non-empty ring").id;
        self.nodes
            .iter()
            .position(|n| &n.id == owner)
            .expect("owner is a member")
    }

    /// The first key `<prefix><n>` that node `i` owns.
    pub fn key_owned_by(&self, i: usize, prefix: &str) -> String {
        (0..)
            .map(|n| format!("{prefix}{n}"))
            .find(|k| self.owner(k) == i)
            .expect("some key maps to every node")
    }

    /// Indexes of the nodes that do not own `key`.
    pub fn non_owners(&self, key: &str) -> Vec<usize> {
        let owner = self.owner(key);
        (0..self.nodes.len()).filter(|&i| i != owner).collect()
    }
}

fn spawn_node(
    i: usize,
    ids: &[String],
    grpc: <TokioNet as Net>::Listener,
    http: <TokioNet as Net>::Listener,
    setup: &impl Fn(usize, &Registry),
) -> TestNode {
    let groups = Registry::with_seed(i as u64);
    setup(i, &groups);
    let url = format!("http://{}", http.local_addr().unwrap());
    let discovery = Arc::new(StaticDiscovery::new(ids));
    let node = Node::new(
        TokioNet,
        groups.clone(),
        discovery,
        NodeConfig::new(ids[i].clone()),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(node.run(grpc, Some(http), async move {
        let _ = stopped.await;
    }));
    TestNode {
        id: ids[i].clone(),
        url,
        groups,
        stop: Some(stop),
        task: Some(task),
    }
}

async fn wait_healthy(url: &str) {
    for _ in 0..200 {
        if let Ok(r) = reqwest::get(format!("{url}/healthz")).await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{url} did not become healthy within 2 s");
}

/// A 200 answer's body, or the status and body of anything else.
pub async fn http_get(url: &str) -> (u16, Bytes) {
    let r = reqwest::get(url).await.expect("request sent");
    (r.status().as_u16(), r.bytes().await.expect("body"))
}

/// Every node keeps every copy it fetches, so invalidation is what keeps reads fresh.
pub fn keep_all_copies() -> HotConfig {
    HotConfig {
        fill_ratio: 1.0,
        ..HotConfig::default()
    }
}

/// Group "g" on every node: loads from `db`, keeps every copy, 5 s timeout.
pub fn db_group(db: &Db) -> impl Fn(usize, &Registry) + '_ {
    move |_, reg| {
        reg.group("g")
            .capacity(4 << 20)
            .hot(keep_all_copies())
            .timeout(std::time::Duration::from_secs(5))
            .loader(db.clone())
            .build()
            .unwrap();
    }
}

/// Starts `peercache serve ARGS` on a free HTTP port, ignoring membership flags from the
/// environment, and waits until it is healthy: the process and its HTTP base URL.
pub async fn start_serve(args: &[&str]) -> (process::Proc, String) {
    let http = process::free_port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_peercache"))
        .arg("serve")
        .args(args)
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .env("RUST_LOG", "warn")
        .env_remove("PEERCACHE_ETCD")
        .env_remove("PEERCACHE_PEERS")
        .env_remove("PEERCACHE_WEIGHT")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the peercache binary runs");
    let mut child = process::Proc::new("peercache serve", child);
    let url = format!("http://127.0.0.1:{http}");
    child.until_healthy(&url).await;
    (child, url)
}

/// Runs `peercache serve ARGS`: its stderr if it exits with a failure within 10 s, else
/// what it did instead.
pub async fn serve_refused(args: &[String]) -> Result<String, String> {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_peercache"))
        .arg("serve")
        .args(args)
        .args([
            "--http-addr",
            &format!("127.0.0.1:{}", process::free_port()),
        ])
        .env_remove("PEERCACHE_ETCD")
        .env_remove("PEERCACHE_PEERS")
        .env_remove("PEERCACHE_WEIGHT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let Ok(out) = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output()).await
    else {
        return Err("accepted: still running after 10 s".into());
    };
    let out = out.unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    match out.status.success() {
        true => Err(format!("accepted: {err}")),
        false => Ok(err),
    }
}

/// The value of the first line of `url`/metrics starting with `prefix` (a metric's
/// name and labels); `None` if there is none.
pub async fn metric(url: &str, prefix: &str) -> Option<u64> {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("/metrics has a body");
    (text.lines().find(|l| l.starts_with(prefix)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The generated gRPC client of the peer protocol, connected to `addr` (a node's id):
/// requests exactly as a test builds them.
pub async fn raw_peer(
    addr: &str,
) -> peercache::proto::peer_client::PeerClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    peercache::proto::peer_client::PeerClient::new(channel)
}
