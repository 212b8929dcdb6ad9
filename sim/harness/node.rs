//! A `node<i>` host: the real [`Node`] (gRPC to peers, HTTP to clients) over the
//! simulated network, with membership from the registry host.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peercache::net::SimNet;
use peercache::{HotConfig, Net, Node, NodeConfig, Registry};
use tokio::sync::watch;

use super::Swarm;
use super::db::DbLoader;

pub const GRPC_PORT: u16 = 7000;
pub const HTTP_PORT: u16 = 8080;
pub const GROUP: &str = "g";

pub fn host_name(i: usize) -> String {
    format!("node{i}")
}

pub fn advertise(i: usize) -> String {
    format!("{}:{GRPC_PORT}", host_name(i))
}

/// What the harness can see of and do to the nodes from outside the simulation.
#[derive(Clone, Default)]
pub struct Nodes {
    /// Each running node's groups, replaced when the host restarts.
    pub registries: Arc<Mutex<BTreeMap<usize, Registry>>>,
    /// Set to true to stop a node gracefully.
    pub stop: Arc<Mutex<BTreeMap<usize, watch::Sender<bool>>>>,
}

/// The software of host `node<i>`: started at `start_at` (later than 0 for a joining
/// node), restarted with an empty cache when bounced.
pub fn software(
    i: usize,
    swarm: Swarm,
    nodes: Nodes,
) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = turmoil::Result>>> {
    move || {
        let swarm = swarm.clone();
        let nodes = nodes.clone();
        let host = tracing::info_span!("host", node = i);
        Box::pin(tracing::Instrument::instrument(
            async move {
                let start_at = swarm.start_at(i);
                let now = turmoil::sim_elapsed().unwrap_or_default();
                if now < start_at {
                    tokio::time::sleep(start_at - now).await;
                }
                let incarnation = turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64;
                let registry = Registry::with_seed(swarm.seed ^ (i as u64) << 32 ^ incarnation);
                registry
                    .group(GROUP)
                    .capacity(swarm.capacity)
                    .ttl(swarm.main_ttl)
                    .ttl_jitter(0.1)
                    .hot(HotConfig {
                        ttl: swarm.hot_ttl,
                        ..HotConfig::default()
                    })
                    .timeout(swarm.timeout)
                    .loader(DbLoader {
                        timeout: swarm.load_timeout(),
                    })
                    .build()?;
                let (stop, mut stopped) = watch::channel(false);
                nodes.registries.lock().unwrap().insert(i, registry.clone());
                nodes.stop.lock().unwrap().insert(i, stop);

                let grpc = SimNet.bind(&format!("0.0.0.0:{GRPC_PORT}")).await?;
                let http = SimNet.bind(&format!("0.0.0.0:{HTTP_PORT}")).await?;
                let discovery = super::membership::discovery(&swarm, i, incarnation);
                let mut config = NodeConfig::new(advertise(i));
                config.vnodes = swarm.vnodes;
                config.sweep_every = Duration::from_millis(500);
                let shutdown = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                Node::new(SimNet, registry, discovery, config)
                    .run(grpc, Some(http), shutdown)
                    .await?;
                Ok(())
            },
            host,
        ))
    }
}
