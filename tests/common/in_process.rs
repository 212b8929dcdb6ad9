//! An in-process cluster, no sockets: one registry per node with one group `g`, the
//! nodes wired to each other by fake peers (groupcache's `fakePeer`) that call the other
//! node's group directly. Every call a node makes to a peer is recorded, every load is
//! counted per node, and a node can be made unreachable.

#![allow(dead_code)] // each test binary uses part of this

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use peercache::peer::{Fetched, PeerClient, PeerFailure, PeerPicker, PeerRef};
use peercache::{Error, Group, GroupBuilder, LoaderFn, Member, Registry, Result};

/// The group every node serves.
pub const GROUP: &str = "g";

/// One call from one node to another.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Call {
    pub from: String,
    pub to: String,
    pub op: &'static str,
    pub key: String,
}

impl Call {
    pub fn new(from: &str, to: &str, op: &'static str, key: &str) -> Self {
        Call {
            from: from.into(),
            to: to.into(),
            op,
            key: key.into(),
        }
    }
}

/// What the nodes share: the call log, the loads per (node, key), the unreachable nodes.
#[derive(Default)]
struct Shared {
    calls: Mutex<Vec<Call>>,
    loads: Mutex<BTreeMap<(String, String), u64>>,
    down: Mutex<BTreeSet<String>>,
    /// Calls to each node still to fail as if it were down.
    failing: Mutex<BTreeMap<String, usize>>,
    /// How long each load takes.
    latency: Mutex<Duration>,
    /// How long each call to a peer takes to arrive.
    call_latency: Mutex<Duration>,
}

/// `from`'s peer for the node `to`: calls `to`'s group as a gRPC service would, unless
/// `to` is down.
pub struct FakePeer {
    from: String,
    to: String,
    target: Registry,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FakePeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FakePeer({} -> {})", self.from, self.to)
    }
}

impl FakePeer {
    /// Logs the call and lets it travel; the target's group, or why it cannot be reached.
    async fn reach(&self, op: &'static str, group: &str, key: &str) -> Result<Group, PeerFailure> {
        let call = Call::new(&self.from, &self.to, op, key);
        self.shared.calls.lock().push(call);
        let latency = *self.shared.call_latency.lock();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let failing = match self.shared.failing.lock().get_mut(&self.to) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        };
        if failing || self.shared.down.lock().contains(&self.to) {
            return Err(PeerFailure::Unreachable(format!("{} is down", self.to)));
        }
        self.target.get(group).map_err(PeerFailure::Answered)
    }
}

#[async_trait]
impl PeerClient for FakePeer {
    fn id(&self) -> &str {
        &self.to
    }

    async fn get(
        &self,
        group: &str,
        key: &str,
        deadline: Duration,
    ) -> Result<Fetched, PeerFailure> {
        let g = self.reach("get", group, key).await?;
        g.get_for_peer(key, deadline)
            .await
            .map_err(PeerFailure::Answered)
    }

    async fn get_relayed(
        &self,
        group: &str,
        key: &str,
        deadline: Duration,
    ) -> Result<Fetched, PeerFailure> {
        let g = self.reach("relay", group, key).await?;
        g.get_relayed_for_peer(key, deadline)
            .await
            .map_err(PeerFailure::Answered)
    }

    async fn set(
        &self,
        group: &str,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
        deadline: Duration,
    ) -> Result<u64, PeerFailure> {
        let g = self.reach("set", group, key).await?;
        let written = g.write_for_peer(key, Some(value), ttl, deadline).await;
        written.map_err(PeerFailure::Answered)
    }

    async fn remove(&self, group: &str, key: &str, deadline: Duration) -> Result<u64, PeerFailure> {
        let g = self.reach("remove", group, key).await?;
        let written = g.write_for_peer(key, None, None, deadline).await;
        written.map_err(PeerFailure::Answered)
    }

    async fn invalidate(
        &self,
        group: &str,
        key: &str,
        version: u64,
        _: Duration,
    ) -> Result<(), PeerFailure> {
        let g = self.reach("invalidate", group, key).await?;
        g.invalidate(key, version).map_err(PeerFailure::Answered)
    }

    async fn peek(
        &self,
        group: &str,
        key: &str,
        asker: &str,
        _: Duration,
    ) -> Result<Option<Fetched>, PeerFailure> {
        let g = self.reach("peek", group, key).await?;
        g.peek_for_peer(key, asker).map_err(PeerFailure::Answered)
    }

    async fn push(
        &self,
        group: &str,
        entries: Vec<(String, Fetched)>,
        _: Duration,
    ) -> Result<usize, PeerFailure> {
        let g = self.reach("push", group, "").await?;
        g.accept_pushed(entries).map_err(PeerFailure::Answered)
    }
}

/// Nodes in one process.
pub struct InProcess {
    nodes: BTreeMap<String, Registry>,
    shared: Arc<Shared>,
}

impl InProcess {
    /// Nodes `ids`, each serving group `g` configured by `configure` (capacity, hot
    /// copies, timeout) over a loader that answers `v:<key>` and counts its calls; every
    /// node sees every member.
    pub fn new(ids: &[&str], configure: impl Fn(GroupBuilder) -> GroupBuilder) -> Self {
        Self::with_handoff(ids, ids, Duration::ZERO, configure)
    }

    /// [`InProcess::new`], but every node starts with a view of only `members`, and new
    /// owners ask previous ones for `window` after each membership change (see
    /// `PeerPicker::with_handoff_window`).
    pub fn with_handoff(
        ids: &[&str],
        members: &[&str],
        window: Duration,
        configure: impl Fn(GroupBuilder) -> GroupBuilder,
    ) -> Self {
        let shared = Arc::new(Shared::default());
        let mut nodes = BTreeMap::new();
        for (i, id) in ids.iter().enumerate() {
            let registry = Registry::with_seed(i as u64);
            let (node, loads) = (id.to_string(), shared.clone());
            let loader = LoaderFn(move |key: String| {
                *loads
                    .loads
                    .lock()
                    .entry((node.clone(), key.clone()))
                    .or_default() += 1;
                let latency = *loads.latency.lock();
                async move {
                    if !latency.is_zero() {
                        tokio::time::sleep(latency).await;
                    }
                    Ok::<_, Error>(Bytes::from(format!("v:{key}")))
                }
            });
            configure(registry.group(GROUP).loader(loader))
                .build()
                .expect("valid group");
            nodes.insert(id.to_string(), registry);
        }
        let cluster = InProcess { nodes, shared };
        for id in ids {
            let picker = PeerPicker::new(*id, peercache::ring::DEFAULT_VNODES, cluster.connect(id))
                .with_handoff_window(window);
            cluster.registry(id).set_peers(Arc::new(picker)).unwrap();
            cluster.view(id, members);
        }
        cluster
    }

    /// How `from` makes its peers.
    fn connect(&self, from: &str) -> peercache::peer::Connect {
        let (from, nodes, shared) = (from.to_owned(), self.nodes.clone(), self.shared.clone());
        Box::new(move |m: &Member| {
            let target = nodes
                .get(&m.id)
                .cloned()
                .ok_or_else(|| Error::Config(format!("no node {}", m.id)))?;
            Ok(Arc::new(FakePeer {
                from: from.clone(),
                to: m.id.clone(),
                target,
                shared: shared.clone(),
            }) as PeerRef)
        })
    }

    /// Sets the members `node` sees; returns the peers new to its view.
    pub fn view(&self, node: &str, members: &[&str]) -> Vec<PeerRef> {
        let members = members
            .iter()
            .map(|id| Member::new(*id, format!("{id}:7000")))
            .collect();
        self.picker(node).set_members(members)
    }

    pub fn registry(&self, node: &str) -> &Registry {
        &self.nodes[node]
    }

    pub fn picker(&self, node: &str) -> Arc<PeerPicker> {
        self.registry(node).peers().expect("wired")
    }

    /// `node`'s group `g`.
    pub fn group(&self, node: &str) -> Group {
        self.registry(node).get(GROUP).unwrap()
    }

    /// The owner of `key` in `node`'s view.
    pub fn owner_in_view_of(&self, node: &str, key: &str) -> String {
        let view = self.picker(node).view();
        view.ring.owner(key).expect("members").id.clone()
    }

    /// A key whose owner is `owner` in the view of every node listed in `views`.
    pub fn key_owned_by(&self, owner: &str, views: &[&str]) -> String {
        (0..)
            .map(|i| format!("key{i}"))
            .find(|k| views.iter().all(|v| self.owner_in_view_of(v, k) == owner))
            .expect("some key")
    }

    /// Makes `node` unreachable to the others, or reachable again.
    pub fn set_down(&self, node: &str, down: bool) {
        let mut nodes = self.shared.down.lock();
        if down {
            nodes.insert(node.to_owned());
        } else {
            nodes.remove(node);
        }
    }

    /// Makes the next `calls` calls to `node` fail as if it were down.
    pub fn fail_next(&self, node: &str, calls: usize) {
        self.shared.failing.lock().insert(node.to_owned(), calls);
    }

    /// Makes every load take `latency`.
    pub fn set_latency(&self, latency: Duration) {
        *self.shared.latency.lock() = latency;
    }

    /// Makes every call to a peer take `latency` to arrive.
    pub fn set_call_latency(&self, latency: Duration) {
        *self.shared.call_latency.lock() = latency;
    }

    /// Calls made so far, in order; clears the log.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.shared.calls.lock())
    }

    /// Loader calls of `node` for `key`.
    pub fn loads(&self, node: &str, key: &str) -> u64 {
        let loads = self.shared.loads.lock();
        loads.get(&(node.into(), key.into())).copied().unwrap_or(0)
    }
}
