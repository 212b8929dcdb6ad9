//! The discovery seam: how a node announces itself and learns the membership.
//!
//! [`StaticDiscovery`] is a fixed list. [`LeasedDiscovery`] keeps a lease-backed record
//! per node in a [`Coordinator`] (etcd's model: leases, revisions, prefix watches) and
//! follows the others' records: in etcd ([`EtcdDiscovery`], through [`EtcdCoordinator`]),
//! or in the [`registry`], a small server with etcd's semantics for the simulator and
//! for tests ([`RegistryCoordinator`] is its client).

use async_trait::async_trait;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::ring::Member;

mod coordinator;
mod etcd;
mod etcd_access;
mod leased;
pub mod registry;

pub use coordinator::{Coordinator, KeyValue, Lease, LeaseId, WatchEvent, WatchStream};
pub use etcd::{EtcdConfig, EtcdCoordinator, EtcdDiscovery};
pub use etcd_access::{EtcdTls, EtcdUser};
pub use leased::{LeasedConfig, LeasedDiscovery};
pub use registry::{
    RegistryConfig, RegistryCoordinator, RegistryCoordinatorConfig, serve_registry,
};

/// Where a node finds its peers.
#[async_trait]
pub trait Discovery: Send + Sync + 'static {
    /// Announces `me` and returns the membership (including `me`), now and as it changes.
    async fn join(&self, me: Member) -> Result<watch::Receiver<Vec<Member>>>;

    /// Withdraws this node's announcement before it stops.
    async fn leave(&self) -> Result<()>;
}

/// A fixed member list given at start-up, the node itself included.
#[derive(Debug)]
pub struct StaticDiscovery {
    members: watch::Sender<Vec<Member>>,
}

impl StaticDiscovery {
    /// Members with the given gRPC addresses, each its own id, weight 1.
    pub fn new<S: AsRef<str>>(addrs: impl IntoIterator<Item = S>) -> Self {
        Self::with_members(
            addrs
                .into_iter()
                .map(|a| Member::new(a.as_ref(), a.as_ref())),
        )
    }

    /// The given members.
    pub fn with_members(members: impl IntoIterator<Item = Member>) -> Self {
        let mut members: Vec<Member> = members.into_iter().collect();
        members.sort_by(|a, b| a.id.cmp(&b.id));
        members.dedup_by(|a, b| a.id == b.id);
        StaticDiscovery {
            members: watch::Sender::new(members),
        }
    }
}

#[async_trait]
impl Discovery for StaticDiscovery {
    async fn join(&self, me: Member) -> Result<watch::Receiver<Vec<Member>>> {
        if !self.members.borrow().iter().any(|m| m.id == me.id) {
            return Err(Error::Config(format!(
                "this node ({}) is not in the peer list; list every member, this one included",
                me.id
            )));
        }
        Ok(self.members.subscribe())
    }

    async fn leave(&self) -> Result<()> {
        Ok(())
    }
}
