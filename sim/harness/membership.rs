//! Membership in the simulation: the `registry` host (etcd's lease semantics, served over
//! the simulated network) and each node's [`LeasedDiscovery`] of it. A node cut off from
//! the registry loses its lease exactly as it would lose an etcd lease.

use std::sync::Arc;

use peercache::discovery::{
    LeasedConfig, LeasedDiscovery, RegistryConfig, RegistryCoordinator, RegistryCoordinatorConfig,
    serve_registry,
};
use peercache::net::SimNet;
use peercache::{Discovery, Net};

use super::Swarm;

pub const REGISTRY_HOST: &str = "registry";
const REGISTRY_PORT: u16 = 2379;

/// Adds the registry host.
pub fn add_registry(sim: &mut turmoil::Sim<'_>, _swarm: &Swarm) {
    sim.host(REGISTRY_HOST, || async {
        let listener = SimNet.bind(&format!("0.0.0.0:{REGISTRY_PORT}")).await?;
        serve_registry(listener, RegistryConfig::default(), std::future::pending()).await?;
        Ok(())
    });
}

/// Node `i`'s discovery, for its process started as `incarnation`.
pub fn discovery(swarm: &Swarm, i: usize, incarnation: u64) -> Arc<dyn Discovery> {
    let coordinator = RegistryCoordinator::new(
        SimNet,
        &format!("{REGISTRY_HOST}:{REGISTRY_PORT}"),
        RegistryCoordinatorConfig::default(),
    )
    .expect("registry address");
    Arc::new(LeasedDiscovery::new(
        Arc::new(coordinator),
        LeasedConfig {
            prefix: "/peercache/sim/".into(),
            lease_ttl: swarm.lease_ttl,
            incarnation,
            seed: swarm.seed ^ (i as u64) << 40 ^ incarnation,
            ..LeasedConfig::default()
        },
    ))
}
