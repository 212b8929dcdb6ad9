//! The node-level set of groups: no process-global state, one registry per node.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use super::{Group, GroupBuilder, PeerSlot};
use crate::clock::Clock;
use crate::peer::PeerPicker;
use crate::{Error, Result};

/// The groups of one node, sharing its clock and a seed for their randomness.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    clock: Arc<dyn Clock>,
    seed: u64,
    groups: RwLock<BTreeMap<String, Group>>,
    peers: PeerSlot,
}

impl Registry {
    /// An empty registry reading time from `clock`, with seed 0.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::with_seed(clock, 0)
    }

    /// An empty registry whose groups derive their randomness (TTL jitter) from `seed`.
    pub fn with_seed(clock: Arc<dyn Clock>, seed: u64) -> Self {
        Registry {
            inner: Arc::new(Inner {
                clock,
                seed,
                groups: RwLock::new(BTreeMap::new()),
                peers: PeerSlot::default(),
            }),
        }
    }

    /// Starts configuring a group called `name`.
    pub fn group(&self, name: impl Into<String>) -> GroupBuilder {
        GroupBuilder::new(self.clone(), name.into())
    }

    /// The group called `name`.
    pub fn get(&self, name: &str) -> Result<Group> {
        self.inner
            .groups
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownGroup(name.to_owned()))
    }

    /// All groups, ordered by name.
    pub fn groups(&self) -> Vec<Group> {
        self.inner.groups.read().values().cloned().collect()
    }

    /// Drops expired entries in every group; returns how many.
    pub fn sweep(&self) -> usize {
        self.groups().iter().map(Group::sweep).sum()
    }

    /// Drops every group's main-cache entries of keys this node no longer owns; the node
    /// calls it after each membership change.
    pub fn drop_unowned(&self) -> usize {
        self.groups().iter().map(Group::drop_unowned).sum()
    }

    /// Replays every group's recent writes as invalidations to `peers`, members that
    /// just appeared in this node's view (see [`Group::replay_writes`]).
    pub async fn replay_writes(&self, peers: &[crate::peer::PeerClient]) -> usize {
        let mut failed = 0;
        for group in self.groups() {
            failed += group.replay_writes(peers).await;
        }
        failed
    }

    /// Sweeps every `every` (at least 1 ms) on the registry's clock, forever; run it as
    /// a task and drop or abort it on shutdown.
    pub async fn run_sweeper(&self, every: Duration) {
        // A zero interval would never yield on a clock whose sleep(0) is ready at once.
        let every = every.max(Duration::from_millis(1));
        loop {
            self.inner.clock.sleep(every).await;
            let dropped = self.sweep();
            if dropped > 0 {
                tracing::debug!(dropped, "sweeper dropped expired entries");
            }
        }
    }

    /// Connects every group, present and future, to its peers; once per registry. Until
    /// then (and for a registry used as a plain library) this node owns every key.
    pub fn set_peers(&self, picker: Arc<PeerPicker>) -> Result<()> {
        self.inner
            .peers
            .set(picker)
            .map_err(|_| Error::Config("the registry already has peers".into()))
    }

    /// The peer picker, once [`Registry::set_peers`] was called.
    pub fn peers(&self) -> Option<Arc<PeerPicker>> {
        self.inner.peers.get().cloned()
    }

    /// The clock the registry's groups read.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }

    pub(super) fn peer_slot(&self) -> PeerSlot {
        self.inner.peers.clone()
    }

    pub(super) fn seed(&self) -> u64 {
        self.inner.seed
    }

    pub(super) fn insert(&self, group: Group) -> Result<()> {
        let mut groups = self.inner.groups.write();
        if groups.contains_key(group.name()) {
            return Err(Error::GroupExists(group.name().to_owned()));
        }
        groups.insert(group.name().to_owned(), group);
        Ok(())
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let groups = self.inner.groups.read();
        f.debug_struct("Registry")
            .field("groups", &groups.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}
