//! Membership in the simulation: the `registry` host (etcd's lease semantics, served over
//! the simulated network) and the [`LeasedDiscovery`] of it a node holds its lease with.
//! A node cut off from the registry loses its lease exactly as it would lose an etcd
//! lease. The only place that makes registry clients and leased discoveries.

use std::sync::Arc;
use std::time::Duration;

use peercache::discovery::{
    Coordinator, LeasedConfig, LeasedDiscovery, RegistryConfig, RegistryCoordinator,
    RegistryCoordinatorConfig, serve_registry,
};
use peercache::net::SimNet;
use peercache::{Discovery, Net};

use super::world::retry;

pub const REGISTRY_HOST: &str = "registry";
const REGISTRY_PORT: u16 = 2379;
/// Key prefix of the member records.
pub const MEMBERS: &str = "/peercache/sim/";

/// Adds the registry host.
pub fn add_registry(sim: &mut turmoil::Sim<'_>) {
    sim.host(REGISTRY_HOST, || async {
        let listener = SimNet.bind(&format!("0.0.0.0:{REGISTRY_PORT}")).await?;
        serve_registry(listener, RegistryConfig::default(), std::future::pending()).await?;
        Ok(())
    });
}

/// A client of the registry host; it connects on its first call.
pub fn coordinator() -> RegistryCoordinator {
    RegistryCoordinator::new(
        SimNet,
        &format!("{REGISTRY_HOST}:{REGISTRY_PORT}"),
        RegistryCoordinatorConfig::default(),
    )
    .expect("registry address")
}

/// A client of the registry host, once it answers (hosts start in the same step as
/// clients, so the listener may not be bound yet).
pub async fn answering_coordinator() -> RegistryCoordinator {
    let c = coordinator();
    let answers = || async { c.range("").await.ok() };
    retry(50, Duration::from_millis(100), answers)
        .await
        .expect("the registry host answers");
    c
}

/// How a node holds its lease: the TTL, and registry calls' timing where it differs
/// from the library's defaults (`None`).
#[derive(Debug, Clone)]
pub struct Lease {
    pub ttl: Duration,
    /// Longest wait for one registry call.
    pub call_timeout: Option<Duration>,
    /// Longest pause between attempts.
    pub backoff_max: Option<Duration>,
}

impl Lease {
    pub fn new(ttl: Duration) -> Lease {
        Lease {
            ttl,
            call_timeout: None,
            backoff_max: None,
        }
    }

    /// The discovery of a process started as `incarnation`, holding its lease in the
    /// registry through `coordinator`, its backoff jitter drawn from `seed`.
    pub fn discovery(
        &self,
        coordinator: RegistryCoordinator,
        incarnation: u64,
        seed: u64,
    ) -> Arc<dyn Discovery> {
        let defaults = LeasedConfig::default();
        let config = LeasedConfig {
            prefix: MEMBERS.into(),
            lease_ttl: self.ttl,
            call_timeout: self.call_timeout.unwrap_or(defaults.call_timeout),
            backoff_max: self.backoff_max.unwrap_or(defaults.backoff_max),
            incarnation,
            seed,
            ..defaults
        };
        Arc::new(LeasedDiscovery::new(Arc::new(coordinator), config))
    }
}
