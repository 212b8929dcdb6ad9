//! A `node<i>` host: the real [`Node`] (gRPC to peers, HTTP to clients) over the
//! simulated network, set up from a [`NodeSpec`], with its peers from a static list or
//! from the registry host. The only place that makes and runs nodes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peercache::net::SimNet;
use peercache::ring::DEFAULT_VNODES;
use peercache::tls::Tls;
use peercache::{Discovery, Member, Net, Node, NodeConfig, Registry, Ring, StaticDiscovery};
use tokio::sync::watch;

use super::group::GroupSpec;
use super::membership::{self, Lease};
use super::world::{Software, now};

pub const GRPC_PORT: u16 = 7000;
pub const HTTP_PORT: u16 = 8080;
/// Where nodes serve the Redis protocol.
pub const RESP_PORT: u16 = 6379;

pub fn host_name(i: usize) -> String {
    format!("node{i}")
}

/// Node `i`'s gRPC address, which is also its member id.
pub fn advertise(i: usize) -> String {
    format!("{}:{GRPC_PORT}", host_name(i))
}

/// The ring every node of a static list of `n` nodes builds.
pub fn static_ring(n: usize) -> Ring {
    Ring::new(
        (0..n).map(|i| Member::new(advertise(i), advertise(i))),
        DEFAULT_VNODES,
    )
}

/// What the harness can see of and do to the nodes from outside the simulation.
#[derive(Clone, Default)]
pub struct Nodes {
    /// Each running node's groups, replaced when the host restarts.
    pub registries: Arc<Mutex<BTreeMap<usize, Registry>>>,
    /// Set to true to stop a node gracefully.
    pub stop: Arc<Mutex<BTreeMap<usize, watch::Sender<bool>>>>,
    /// Each node's peer TLS, kept across restarts, for its handshake counters.
    pub tls: Arc<Mutex<BTreeMap<usize, Arc<Tls>>>>,
}

/// Where a node finds its peers.
#[derive(Debug, Clone)]
pub enum Peers {
    /// A fixed list: nodes `0..n`.
    Static(usize),
    /// Through the registry host, holding a lease.
    Leased(Lease),
}

/// How node `index` is set up: its group, its peers, and what differs from the
/// defaults (`None` keeps the library's).
#[derive(Clone)]
pub struct NodeSpec {
    pub index: usize,
    /// The run's seed; the node's randomness is drawn from it.
    pub seed: u64,
    pub group: GroupSpec,
    pub peers: Peers,
    /// When the node starts (later than 0 for a node joining later).
    pub start_at: Duration,
    /// Virtual nodes in the ring.
    pub vnodes: Option<u32>,
    /// How often expired entries are swept.
    pub sweep_every: Option<Duration>,
    /// Mutual TLS with its peers; plaintext without it.
    pub peer_tls: Option<Arc<Tls>>,
}

impl NodeSpec {
    pub fn new(index: usize, seed: u64, group: GroupSpec, peers: Peers) -> NodeSpec {
        NodeSpec {
            index,
            seed,
            group,
            peers,
            start_at: Duration::ZERO,
            vnodes: None,
            sweep_every: None,
            peer_tls: None,
        }
    }

    /// Adds the host `node<i>`; `nodes` sees it while it runs. A bounced host restarts
    /// with an empty cache.
    pub fn add_to(self, sim: &mut turmoil::Sim<'_>, nodes: &Nodes) {
        if let Some(tls) = &self.peer_tls {
            nodes.tls.lock().unwrap().insert(self.index, tls.clone());
        }
        let nodes = nodes.clone();
        sim.host(host_name(self.index), move || -> Software {
            let span = tracing::info_span!("host", node = self.index);
            Box::pin(tracing::Instrument::instrument(
                self.clone().run(nodes.clone()),
                span,
            ))
        });
    }

    async fn run(self, nodes: Nodes) -> turmoil::Result {
        let i = self.index;
        if now() < self.start_at {
            tokio::time::sleep(self.start_at - now()).await;
        }
        // Tells this process from the host's earlier ones (after a bounce).
        let incarnation = now().as_millis() as u64;
        let registry = self
            .group
            .registry(self.seed ^ (i as u64) << 32 ^ incarnation)?;
        let (stop, mut stopped) = watch::channel(false);
        nodes.registries.lock().unwrap().insert(i, registry.clone());
        nodes.stop.lock().unwrap().insert(i, stop);

        let grpc = SimNet.bind(&format!("0.0.0.0:{GRPC_PORT}")).await?;
        let http = SimNet.bind(&format!("0.0.0.0:{HTTP_PORT}")).await?;
        let resp = SimNet.bind(&format!("0.0.0.0:{RESP_PORT}")).await?;
        let discovery: Arc<dyn Discovery> = match &self.peers {
            Peers::Static(n) => Arc::new(StaticDiscovery::new((0..*n).map(advertise))),
            Peers::Leased(lease) => lease.discovery(
                membership::coordinator(),
                incarnation,
                self.seed ^ (i as u64) << 40 ^ incarnation,
            ),
        };
        let mut config = NodeConfig::new(advertise(i));
        if let Some(vnodes) = self.vnodes {
            config.vnodes = vnodes;
        }
        if let Some(every) = self.sweep_every {
            config.sweep_every = every;
        }
        config.peer_tls = self.peer_tls.clone();
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        Node::new(SimNet, registry, discovery, config)
            .with_resp(resp)
            .run(grpc, Some(http), shutdown)
            .await?;
        Ok(())
    }
}
