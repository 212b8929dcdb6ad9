//! A node: the groups of one process served to peers (gRPC) and clients (HTTP), with
//! membership from a [`Discovery`] and the network from a [`Net`].
//!
//! Shutdown follows mini-redis: [`Node::run`] takes a future; when it completes the node
//! leaves the membership, stops accepting, lets requests in flight finish, and stops
//! its background tasks.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::discovery::Discovery;
use crate::group::Registry;
use crate::metrics::Metrics;
use crate::net::transport::{self, ChannelTimeouts};
use crate::net::{Listener, Net};
use crate::peer::{MAX_MESSAGE, PeerClient, PeerPicker, PeerService};
use crate::proto::peer_server::PeerServer;
use crate::ring::{DEFAULT_VNODES, Member};
use crate::{Error, Result};

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
}

impl<N: Net> Node<N> {
    /// A node serving `groups`, reaching peers through `net`, finding them via `discovery`.
    pub fn new(
        net: N,
        groups: Registry,
        discovery: Arc<dyn Discovery>,
        config: NodeConfig,
    ) -> Self {
        let metrics = Arc::new(Metrics::new(groups.clone()));
        Node {
            net,
            groups,
            discovery,
            config,
            metrics,
        }
    }

    /// Serves peers on `grpc` and clients on `http` until `shutdown` completes, then
    /// leaves the membership and drains: requests in flight finish, new ones are refused.
    pub async fn run(
        self,
        grpc: N::Listener,
        http: Option<N::Listener>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        let Node {
            net,
            groups,
            discovery,
            config,
            metrics,
        } = self;
        let picker = Arc::new(PeerPicker::new(
            config.id.clone(),
            config.vnodes,
            connector(net, config.channel, metrics.clone()),
        ));
        groups.set_peers(picker.clone())?;
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        tracing::info!(
            node = %config.id,
            grpc = ?grpc.local_addr().ok(),
            http = ?http.as_ref().and_then(|l| l.local_addr().ok()),
            "node serving"
        );
        let (stop, stopped) = watch::channel(false);
        let until_stopped = move || {
            let mut rx = stopped.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let mut servers = JoinSet::new();
        let service = PeerServer::new(PeerService::new(groups.clone()))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let grpc_stop = until_stopped();
        servers.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(transport::incoming(grpc), grpc_stop)
                .await
                .map_err(|e| Error::Io(format!("gRPC server: {e}")))
        });
        if let Some(http) = http {
            let app = crate::http::router(crate::http::State {
                groups: groups.clone(),
                picker: picker.clone(),
                metrics: metrics.clone(),
                ready: ready.clone(),
            });
            let http_stop = until_stopped();
            servers.spawn(async move {
                axum::serve(transport::AxumListener(http), app)
                    .with_graceful_shutdown(http_stop)
                    .await
                    .map_err(|e| Error::Io(format!("HTTP server: {e}")))
            });
        }

        // Serving starts at once; client requests get 503 until the node has joined, so
        // none waits unanswered in the accept queue while the registry is out of reach.
        let me =
            Member::new(config.id.clone(), config.advertise.clone()).with_weight(config.weight);
        tokio::pin!(shutdown);
        let joined = tokio::select! {
            joined = discovery.join(me) => Some(joined),
            () = &mut shutdown => None,
            Some(ended) = servers.join_next() => {
                let _ = stop.send(true);
                return ended.unwrap_or_else(|e| Err(Error::Io(format!("server task: {e}"))));
            }
        };
        let mut members = match joined {
            Some(Ok(members)) => members,
            // Shut down before joining, or joining failed: stop serving.
            stopped_early => {
                let _ = stop.send(true);
                while servers.join_next().await.is_some() {}
                return stopped_early.map_or(Ok(()), |r| r.map(|_| ()));
            }
        };
        picker.set_members(members.borrow_and_update().clone());
        ready.store(true, std::sync::atomic::Ordering::Release);
        tracing::info!(
            node = %config.id,
            "node joined the membership"
        );

        // Background work stops when this set is dropped, however `run` ends.
        let mut background = JoinSet::new();
        let watched = picker.clone();
        let owned = groups.clone();
        background.spawn(async move {
            let mut replays = JoinSet::new();
            while members.changed().await.is_ok() {
                let now = members.borrow_and_update().clone();
                let before = watched.view();
                watched.set_members(now);
                let dropped = owned.drop_unowned();
                if dropped > 0 {
                    tracing::debug!(dropped, "dropped entries of keys that moved away");
                }
                // Members new to this view may have missed writes made without them.
                let known = |id: &str| before.ring.members().iter().any(|m| m.id == id);
                let added: Vec<PeerClient> = watched
                    .others()
                    .into_iter()
                    .filter(|p| !known(p.id()))
                    .collect();
                if !added.is_empty() {
                    let groups = owned.clone();
                    replays.spawn(async move { groups.replay_writes(&added).await });
                }
                while replays.try_join_next().is_some() {}
            }
        });
        let sweeper = groups.clone();
        let every = config.sweep_every;
        background.spawn(async move { sweeper.run_sweeper(every).await });

        tokio::select! {
            () = &mut shutdown => tracing::info!("shutting down"),
            Some(ended) = servers.join_next() => {
                // A server ended on its own: report why, after stopping the rest.
                let _ = stop.send(true);
                let _ = discovery.leave().await;
                return ended.unwrap_or_else(|e| Err(Error::Io(format!("server task: {e}"))));
            }
        }
        if let Err(e) = discovery.leave().await {
            tracing::warn!(error = %e, "leaving the membership failed");
        }
        let _ = stop.send(true);
        while let Some(ended) = servers.join_next().await {
            ended.unwrap_or_else(|e| Err(Error::Io(format!("server task: {e}"))))?;
        }
        drop(background);
        tracing::info!("stopped");
        Ok(())
    }

    /// The node's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }
}

/// Makes peer clients that dial through `net`.
fn connector<N: Net>(
    net: N,
    timeouts: ChannelTimeouts,
    metrics: Arc<Metrics>,
) -> crate::peer::Connect {
    Box::new(move |member: &Member| {
        let channel = transport::channel(net.clone(), &member.addr, timeouts)?;
        Ok(PeerClient::new(
            member.id.as_str(),
            channel,
            metrics.clone(),
        ))
    })
}
