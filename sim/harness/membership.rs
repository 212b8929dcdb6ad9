//! Membership in the simulation: the `registry` host and each node's discovery.

use std::sync::Arc;

use peercache::{Discovery, StaticDiscovery};

use super::Swarm;
use super::node::advertise;

pub const REGISTRY_HOST: &str = "registry";

/// Adds the registry host.
pub fn add_registry(_sim: &mut turmoil::Sim<'_>, _swarm: &Swarm) {}

/// Node `i`'s discovery.
pub fn discovery(swarm: &Swarm, _i: usize, _incarnation: u64) -> Arc<dyn Discovery> {
    Arc::new(StaticDiscovery::new((0..swarm.hosts()).map(advertise)))
}
