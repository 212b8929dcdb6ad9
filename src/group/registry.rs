//! The node-level set of groups: no process-global state, one registry per node.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio_util::task::TaskTracker;

use super::{Group, GroupBuilder, PeerSlot};
use crate::error::{Error, Result};
use crate::peer::{PeerPicker, PeerRef};
use crate::time::{self, Epoch};

/// The groups of one node, sharing an epoch for their stores' time, the node's peers,
/// a seed for their randomness and the tasks their writes leave running.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    epoch: Epoch,
    seed: u64,
    groups: RwLock<BTreeMap<String, Group>>,
    peers: PeerSlot,
    tasks: TaskTracker,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty registry with seed 0.
    pub fn new() -> Self {
        Self::with_seed(0)
    }

    /// An empty registry whose groups derive their randomness (TTL jitter, hot-copy
    /// sampling) from `seed`.
    pub fn with_seed(seed: u64) -> Self {
        Registry {
            inner: Arc::new(Inner {
                epoch: Epoch::new(),
                seed,
                groups: RwLock::new(BTreeMap::new()),
                peers: PeerSlot::default(),
                tasks: TaskTracker::new(),
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

    /// Drops every group's copies of keys `member` owns (see [`Group::drop_copies_of`]).
    pub fn drop_copies_of(&self, member: &str) -> usize {
        self.groups().iter().map(|g| g.drop_copies_of(member)).sum()
    }

    /// Replays every group's recent writes as invalidations to `peers`, members that
    /// just appeared in this node's view (see [`Group::replay_writes`]).
    pub async fn replay_writes(&self, peers: &[PeerRef]) -> usize {
        let mut failed = 0;
        for group in self.groups() {
            failed += group.replay_writes(peers).await;
        }
        failed
    }

    /// Pushes every group's main entries to their owners once this node has left (the
    /// ring without it), most recently used first, until `budget` has passed; returns
    /// (entries sent, entries kept by their new owners). A node leaving gracefully calls
    /// it before it leaves the membership.
    pub async fn hand_off_all(&self, budget: Duration) -> (usize, usize) {
        let Some(picker) = self.peers() else {
            return (0, 0);
        };
        let ring = picker.ring_without_self();
        let deadline = time::now() + budget;
        let pushes = self.groups();
        let pushes = pushes.iter().map(|g| g.push_to(&ring, deadline));
        let done = futures::future::join_all(pushes).await;
        done.iter()
            .fold((0, 0), |(s, k), (s2, k2)| (s + s2, k + k2))
    }

    /// Sweeps every `every` (at least 1 ms), forever; run it as a task and drop or abort
    /// it on shutdown.
    pub async fn run_sweeper(&self, every: Duration) {
        // A zero interval would never yield to other tasks.
        let every = every.max(Duration::from_millis(1));
        loop {
            time::sleep(every).await;
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

    /// Waits for the work the groups' writes left running (invalidations to other
    /// members, each bounded by its deadline). The node calls it at shutdown, after its
    /// servers stopped taking writes.
    pub async fn drain(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    pub(super) fn epoch(&self) -> Epoch {
        self.inner.epoch
    }

    pub(super) fn tasks(&self) -> TaskTracker {
        self.inner.tasks.clone()
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
