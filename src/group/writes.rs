//! Writes: routed to the key's owner, which stamps a version, applies the write, tells
//! the other members to drop older copies, and remembers the write to replay it to
//! members it sees later. The node the write came through remembers it too, so the
//! replay happens even if the owner is gone by then.
//!
//! Versions are per key and only grow: the owner's next version is above its group
//! counter and above every version seen for the key (the store's floor). A copy carries
//! the owner's version, so wherever a fill that started before a write lands, the store
//! refuses it.
//!
//! A version from the network raises one key's floor, never the group counter, and no
//! floor rises above [`MAX_VERSION`]: whatever a caller sends, the other keys' writes
//! keep versions every peer accepts, and an owner minting above the range for a key
//! whose floor sits at the top still has its invalidations obeyed (they drop copies
//! whatever their version).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use parking_lot::Mutex;

use super::{Group, time_left};
use crate::buggify::{self, Bug, Point};
use crate::error::{Error, Result};
use crate::peer::{PeerFailure, PeerRef, Pick};
use crate::store::{Entry, Rejected};
use crate::time::{self, Instant};

/// Longest the owner waits for other members to confirm an invalidation.
const INVALIDATE_DEADLINE: Duration = Duration::from_secs(1);
/// How long, and how many, writes a node remembers (as owner, or as the node a write
/// came through) to replay to members it sees later.
const RECENT_WRITES_WINDOW: Duration = Duration::from_secs(60);
const RECENT_WRITES_MAX: usize = 4096;

/// The highest floor a version from the network can set. Versions are counters; one
/// near `u64::MAX` would pin a key's floor where no later write could pass it, so floors
/// stop here and leave 3 × 2^62 versions of headroom above.
pub(crate) const MAX_VERSION: u64 = 1 << 62;

/// Refuses a version from the network above [`MAX_VERSION`] where it would be kept as
/// an entry's version (a copy), not just raise a floor.
pub(super) fn check_version(version: u64) -> Result<()> {
    if version > MAX_VERSION {
        return Err(Error::Invalid(format!("version {version} is out of range")));
    }
    Ok(())
}

/// A group's version counter and the writes it applied or routed lately.
#[derive(Default)]
pub(super) struct Writes {
    versions: AtomicU64,
    /// (key, version, when), oldest first.
    recent: Mutex<VecDeque<(Box<str>, u64, Duration)>>,
}

impl Writes {
    /// A version above the key's `floor` and above every version the counter has
    /// handed out. The floor does not raise the counter: it may come from the network,
    /// and a key's floor must not move every other key's versions.
    fn next_version(&self, floor: u64) -> u64 {
        let counted = self.versions.fetch_add(1, Relaxed).saturating_add(1);
        counted.max(floor.saturating_add(1))
    }

    /// Notes a write applied at `now`, forgetting those out of the window.
    fn remember(&self, key: &str, version: u64, now: Duration) {
        let mut recent = self.recent.lock();
        while recent.len() >= RECENT_WRITES_MAX
            || recent
                .front()
                .is_some_and(|(_, _, at)| now.saturating_sub(*at) > RECENT_WRITES_WINDOW)
        {
            recent.pop_front();
        }
        recent.push_back((key.into(), version, now));
    }

    /// The writes still in the window at `now`.
    fn recent(&self, now: Duration) -> Vec<(Box<str>, u64)> {
        self.recent
            .lock()
            .iter()
            .filter(|(_, _, at)| now.saturating_sub(*at) <= RECENT_WRITES_WINDOW)
            .map(|(k, v, _)| (k.clone(), *v))
            .collect()
    }
}

impl Group {
    /// Applies a peer's write: this node is the owner in the peer's view, so it applies
    /// the write without forwarding it, whatever its own view says.
    pub async fn write_for_peer(
        &self,
        key: &str,
        value: Option<Bytes>,
        ttl: Option<Duration>,
        deadline: Duration,
    ) -> Result<u64> {
        self.inner.limits.check_key(key)?;
        if let Some(v) = &value {
            self.inner.limits.check_value(v)?;
        }
        let at = time::now() + deadline;
        Ok(self.write_as_owner(key, value, ttl, Some(at)).await)
    }

    /// Drops this node's copies of `key`, as the owner asks after a write stamped
    /// `version`, and raises the key's floor to `version` (at most [`MAX_VERSION`]).
    pub fn invalidate(&self, key: &str, version: u64) -> Result<()> {
        self.inner.limits.check_key(key)?;
        self.drop_copies(key, version, false);
        Ok(())
    }

    /// Sends invalidations of this node's recent writes (applied as owner or routed to
    /// the owner; the last minute, at most 4096) to `peers`, members that just appeared
    /// in this node's view. While views disagreed (a member cut off from the registry, a
    /// late watch) a write reached only the members its owner knew; a member it did not
    /// know may hold an old copy, even as the key's owner in its own view, and the owner
    /// may have crashed before it could replay. Returns how many invalidations were not
    /// delivered.
    pub async fn replay_writes(&self, peers: &[PeerRef]) -> usize {
        if buggify::planted(Bug::NoReplay) {
            return 0;
        }
        let writes = self.inner.writes.recent(self.inner.epoch.now());
        let name = &self.inner.name;
        let mut failed = 0;
        for peer in peers {
            for (key, version) in &writes {
                let sent = peer.invalidate(name, key, *version, INVALIDATE_DEADLINE);
                failed += usize::from(sent.await.is_err());
            }
        }
        self.inner
            .counters
            .invalidations_failed
            .fetch_add(failed as u64, Relaxed);
        failed
    }

    /// Routes a write to the key's owner.
    pub(super) async fn write(
        &self,
        key: &str,
        value: Option<Bytes>,
        ttl: Option<Duration>,
    ) -> Result<u64> {
        let deadline = self.deadline();
        let peer = match self.pick(key) {
            Pick::Local => return Ok(self.write_as_owner(key, value, ttl, deadline).await),
            Pick::Peer(peer) => peer,
        };
        let (left, name) = (time_left(deadline), &self.inner.name);
        let sent = match value {
            Some(value) => peer.set(name, key, value, ttl, left).await,
            None => peer.remove(name, key, left).await,
        };
        match sent {
            Ok(version) => {
                // The owner invalidates us too; dropping here as well makes this node
                // read its own write even if that message is slow.
                self.drop_copies(key, version, false);
                // Replayed to members that appear in this view, like the owner's own
                // writes: if views disagreed and the owner is gone before it could
                // replay the write, this node still tells the key's owner in the new view.
                let now = self.inner.epoch.now();
                self.inner.writes.remember(key, version, now);
                Ok(version)
            }
            Err(PeerFailure::Answered(e)) => Err(e),
            Err(PeerFailure::Unreachable(why)) => {
                self.inner.counters.peer_errors.fetch_add(1, Relaxed);
                tracing::debug!(group = %name, key, peer = peer.id(), %why, "owner unreachable; write refused");
                // Whatever we held may be outdated by the write the caller attempted.
                self.drop_copies(key, 0, false);
                let owner = peer.id();
                Err(Error::Unavailable(format!(
                    "owner {owner} of the key: {why}"
                )))
            }
        }
    }

    /// Applies a write here as the owner, then tells every other member to drop older
    /// copies, waiting until `deadline` (at most a second) for them. The messages go out
    /// from a task the node tracks, so a caller that gives up does not cancel them and
    /// shutdown waits for them; failures are counted, and any copy they miss expires
    /// within the hot TTL.
    async fn write_as_owner(
        &self,
        key: &str,
        value: Option<Bytes>,
        ttl: Option<Duration>,
        deadline: Option<Instant>,
    ) -> u64 {
        let version = self.write_local(key, value, ttl);
        self.inner
            .writes
            .remember(key, version, self.inner.epoch.now());
        let others = self.picker().map(|p| p.others()).unwrap_or_default();
        if others.is_empty() || buggify::planted(Bug::NoInvalidations) {
            return version;
        }
        let wait = time_left(deadline).min(INVALIDATE_DEADLINE);
        let (group, key) = (self.clone(), key.to_owned());
        let fan_out = self.inner.tasks.spawn(async move {
            let name = &group.inner.name;
            let sends = others.iter().map(|p| async {
                buggify::delay(Point::BeforeInvalidate).await;
                p.invalidate(name, &key, version, wait).await
            });
            let failed = join_all(sends).await.iter().filter(|r| r.is_err()).count();
            if failed > 0 {
                let counters = &group.inner.counters;
                counters
                    .invalidations_failed
                    .fetch_add(failed as u64, Relaxed);
                tracing::debug!(group = %name, failed, "invalidations not delivered");
            }
        });
        let _ = fan_out.await;
        version
    }

    /// Stores `value` (or removes the key when `None`) at a new version, which it
    /// returns, and drops the key's other copies and flights.
    fn write_local(&self, key: &str, value: Option<Bytes>, ttl: Option<Duration>) -> u64 {
        let inner = &*self.inner;
        let version = inner.writes.next_version(inner.main.floor(key));
        let stored = match value {
            Some(value) => {
                let now = inner.epoch.now();
                let expires_at = inner.ttl.expiry(ttl, now, &inner.rng);
                let entry = Entry {
                    value,
                    version,
                    expires_at,
                };
                inner.main.insert(key, entry)
            }
            None => {
                inner.main.remove(key, version);
                Ok(())
            }
        };
        self.drop_copies(key, version, true);
        match stored {
            // Stale: a newer write to this key (or to one sharing its version slot) came
            // first. The store dropped any older entry of this key, so the next get loads
            // from the source, which a cache-aside writer has already updated.
            Ok(()) | Err(Rejected::Stale) => version,
            Err(Rejected::TooLarge) => {
                unreachable!("the builder sizes buckets for the largest allowed entry")
            }
        }
    }

    /// Drops this node's copies of `key` after a write stamped `version` by the key's
    /// owner, and detaches the key's flights. Every copy goes, whatever its version:
    /// versions are stamped per owner, so a copy from an earlier owner may carry a
    /// higher one. The floor rises above everything seen, so a fill already under way
    /// here is refused too. `keep_main` spares the main cache (the owner's own write).
    fn drop_copies(&self, key: &str, version: u64, keep_main: bool) {
        let inner = &*self.inner;
        let version = version.min(MAX_VERSION);
        inner.hot.drop_copy(key, version);
        if !keep_main {
            inner.main.purge(key, version);
        }
        if buggify::planted(Bug::FlightsSurviveWrites) {
            return;
        }
        inner.fetches.forget(key);
        inner.loads.forget(key);
    }
}
