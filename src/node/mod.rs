//! A node: the groups of one process served to peers (gRPC) and clients (HTTP, and
//! RESP when given a listener), with membership from a [`Discovery`] and the network
//! from a [`Net`].
//!
//! [`Node::run`] reads top-down: make the picker, start the servers (servers.rs), join
//! the membership, follow it (membership.rs) and sweep expired entries until shutdown.
//! Shutdown follows mini-redis: `run` takes a future; when it completes the node leaves
//! the membership, stops accepting, lets requests in flight finish, waits for the
//! invalidations its writes started, and stops its background tasks.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::discovery::Discovery;
use crate::error::Result;
use crate::group::Registry;
use crate::grpc;
use crate::http::{ClientAuth, HttpLimits};
use crate::metrics::Metrics;
use crate::net::transport::ChannelTimeouts;
use crate::net::{Listener, Net};
use crate::peer::{PeerPicker, Suspicious};
use crate::resp::RespConfig;
use crate::ring::{DEFAULT_VNODES, Member};
use crate::tls::Tls;

mod membership;
mod servers;

use servers::Servers;

/// How long a node stopping gracefully pushes entries to their new owners, by default.
pub const DEFAULT_LEAVE_PUSH: Duration = Duration::from_secs(3);

/// How a node presents itself and talks to peers.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's member id: unique in the cluster, stable across restarts.
    pub id: String,
    /// The gRPC address peers reach this node at.
    pub advertise: String,
    /// Weight in the ring (relative share of keys).
    pub weight: u32,
    /// Virtual nodes per unit of weight.
    pub vnodes: u32,
    /// Timeouts of peer channels.
    pub channel: ChannelTimeouts,
    /// How often expired entries are swept.
    pub sweep_every: Duration,
    /// Limits of the HTTP server.
    pub http: HttpLimits,
    /// Client authentication of the HTTP API (open without it).
    pub auth: Option<ClientAuth>,
    /// How long requests in flight may go on once the node stops; connections still
    /// open after it are dropped.
    pub shutdown_grace: Duration,
    /// Mutual TLS between peers ([`Tls::mutual`]); plaintext without it.
    pub peer_tls: Option<Arc<Tls>>,
    /// TLS of the HTTP API (HTTPS); plaintext without it.
    pub http_tls: Option<Arc<Tls>>,
    /// The RESP server's groups and limits (it runs when [`Node::with_resp`] gives it a
    /// listener); it authenticates clients with [`NodeConfig::auth`]'s tokens.
    pub resp: RespConfig,
    /// How long after a membership change a key's new owner asks its previous owner
    /// for the entry before loading it (zero: never).
    pub handoff_window: Duration,
    /// How long a node stopping gracefully spends pushing its entries to their new
    /// owners before it leaves the membership (zero: it pushes nothing).
    pub leave_push: Duration,
    /// How gets to each peer are sent together as GetMany calls (src/grpc/batch.rs).
    pub coalescing: crate::grpc::Coalescing,
}

impl NodeConfig {
    /// Defaults for a node reached at `advertise`, which is also its member id.
    pub fn new(advertise: impl Into<String>) -> Self {
        let advertise = advertise.into();
        NodeConfig {
            id: advertise.clone(),
            advertise,
            weight: 1,
            vnodes: DEFAULT_VNODES,
            channel: ChannelTimeouts::default(),
            sweep_every: Duration::from_secs(1),
            http: HttpLimits::default(),
            auth: None,
            shutdown_grace: Duration::from_secs(3),
            peer_tls: None,
            http_tls: None,
            resp: RespConfig::default(),
            handoff_window: crate::peer::DEFAULT_HANDOFF_WINDOW,
            leave_push: DEFAULT_LEAVE_PUSH,
            coalescing: crate::grpc::Coalescing::default(),
        }
    }
}

/// A node, ready to [`run`](Node::run).
pub struct Node<N: Net> {
    net: N,
    groups: Registry,
    discovery: Arc<dyn Discovery>,
    config: NodeConfig,
    metrics: Arc<Metrics>,
    resp: Option<N::Listener>,
}

impl<N: Net> Node<N> {
    /// A node serving `groups`, reaching peers through `net`, finding them via `discovery`.
    pub fn new(
        net: N,
        groups: Registry,
        discovery: Arc<dyn Discovery>,
        config: NodeConfig,
    ) -> Self {
        let mut metrics = Metrics::new(groups.clone());
        for (port, tls) in [("grpc", &config.peer_tls), ("http", &config.http_tls)] {
            if let Some(tls) = tls {
                metrics = metrics.with_tls(port, tls.clone());
            }
        }
        let metrics = Arc::new(metrics);
        Node {
            net,
            groups,
            discovery,
            config,
            metrics,
            resp: None,
        }
    }

    /// Serves Redis clients (RESP) on `listener` too, as [`NodeConfig::resp`] says.
    pub fn with_resp(mut self, listener: N::Listener) -> Self {
        self.resp = Some(listener);
        self
    }

    /// Serves peers on `grpc` and clients on `http` until `shutdown` completes, then
    /// leaves the membership and drains: requests in flight finish, new ones are refused,
    /// invalidations under way are delivered or time out.
    pub async fn run(
        mut self,
        grpc: N::Listener,
        http: Option<N::Listener>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        let (groups, config) = (&self.groups, &self.config);
        let limit = grpc::message_limit(groups);
        let connect = grpc::connector(
            self.net.clone(),
            config.channel,
            config.peer_tls.clone(),
            limit,
            config.coalescing,
            self.metrics.clone(),
        );
        // Every peer behind its member's suspicion; members that answer again after it
        // are sent here, to replay the writes they missed.
        let (recovered, recoveries) = tokio::sync::mpsc::unbounded_channel();
        let connect: crate::peer::Connect = Box::new(move |member| {
            connect(member).map(|peer| Suspicious::wrap(peer, Some(recovered.clone())))
        });
        let picker = PeerPicker::new(config.id.clone(), config.vnodes, connect)
            .with_handoff_window(config.handoff_window);
        let picker = Arc::new(picker);
        groups.set_peers(picker.clone())?;
        let ready = Arc::new(AtomicBool::new(false));
        log_start(config, &grpc, http.as_ref(), self.resp.as_ref());
        let listeners = servers::Listeners {
            grpc,
            http,
            resp: self.resp.take(),
        };
        let mut servers = Servers::start(listeners, config, groups, &picker, &self.metrics, &ready);
        // Serving starts at once; client requests get 503 until the node has joined, so
        // none waits unanswered in the accept queue while the registry is out of reach.
        let me = Member::new(&config.id, &config.advertise).with_weight(config.weight);
        tokio::pin!(shutdown);
        let joined = tokio::select! {
            joined = self.discovery.join(me) => Some(joined),
            () = &mut shutdown => None,
            ended = servers.ended() => return ended,
        };
        let Some(Ok(mut members)) = joined else {
            // Shut down before joining, or joining failed: stop serving.
            let _ = servers.drain(config.shutdown_grace).await;
            return joined.map_or(Ok(()), |failed| failed.map(drop));
        };
        picker.set_members(members.borrow_and_update().clone());
        ready.store(true, Ordering::Release);
        tracing::info!(node = %config.id, "node joined the membership");
        let background = background(members, recoveries, picker, groups, config.sweep_every);
        let failed = tokio::select! {
            () = &mut shutdown => None,
            ended = servers.ended() => Some(ended),
        };
        if failed.is_none() {
            self.hand_off().await;
        }
        self.leave().await;
        if let Some(ended) = failed {
            return ended;
        }
        servers.drain(config.shutdown_grace).await?;
        drop(background);
        groups.drain().await;
        tracing::info!("stopped");
        Ok(())
    }

    /// Pushes the entries this node owns to their owners in the ring without it, for at
    /// most [`NodeConfig::leave_push`], so they need not be loaded again once it is gone.
    async fn hand_off(&self) {
        let budget = self.config.leave_push;
        if budget.is_zero() {
            return;
        }
        let started = crate::time::now();
        let (sent, kept) = self.groups.hand_off_all(budget).await;
        let took = started.elapsed();
        tracing::info!(sent, kept, ?took, "pushed entries to their new owners");
    }

    /// Leaves the membership, so peers stop routing here before the servers stop.
    async fn leave(&self) {
        tracing::info!("shutting down");
        if let Err(e) = self.discovery.leave().await {
            tracing::warn!(error = %e, "leaving the membership failed");
        }
    }

    /// The node's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }
}

/// The node's background work: following the membership and sweeping expired
/// entries. It stops when the set is dropped, however `run` ends.
fn background(
    members: watch::Receiver<Vec<Member>>,
    recoveries: tokio::sync::mpsc::UnboundedReceiver<String>,
    picker: Arc<PeerPicker>,
    groups: &Registry,
    sweep_every: Duration,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    tasks.spawn(membership::replay_to_recovered(
        recoveries,
        picker.clone(),
        groups.clone(),
    ));
    tasks.spawn(membership::probe_suspected(picker.clone(), groups.clone()));
    tasks.spawn(membership::follow(members, picker, groups.clone()));
    let sweeper = groups.clone();
    tasks.spawn(async move { sweeper.run_sweeper(sweep_every).await });
    tasks
}

fn log_start<L: Listener>(config: &NodeConfig, grpc: &L, http: Option<&L>, resp: Option<&L>) {
    tracing::info!(
        node = %config.id,
        grpc = ?grpc.local_addr().ok(),
        http = ?http.and_then(|l| l.local_addr().ok()),
        resp = ?resp.and_then(|l| l.local_addr().ok()),
        "node serving"
    );
}
