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
//! A version from the network raises the group counter at most to half the range, and
//! no floor rises above [`MAX_VERSION`]: whatever a caller sends, the other keys' writes
//! keep versions every peer accepts, and an owner minting above the range for a key
//! whose floor sits at the top still has its invalidations obeyed (they drop copies
//! whatever their version).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{self, join_all};
use futures::stream::{self, StreamExt};
use hashbrown::HashMap;
use parking_lot::Mutex;

use super::{Group, time_left};
use crate::buggify::{self, Bug, Point};
use crate::error::{Error, Result};
use crate::peer::{PeerFailure, PeerRef, Pick};
use crate::store::{Entry, Rejected};
use crate::time::{self, Instant};

/// Longest the owner waits for other members to confirm an invalidation.
const INVALIDATE_DEADLINE: Duration = Duration::from_secs(1);
/// How long, and for how many keys, a node remembers its writes (as owner, or as the
/// node a write came through) to replay them to members it sees later.
const RECENT_WRITES_WINDOW: Duration = Duration::from_secs(60);
const RECENT_WRITES_MAX: usize = 4096;
/// A replayed invalidation is sent up to this many times, waiting [`REPLAY_BACKOFF`],
/// then twice that, between attempts; this many go out to each member at once.
const REPLAY_ATTEMPTS: u32 = 3;
const REPLAY_BACKOFF: Duration = Duration::from_millis(200);
const REPLAY_PARALLEL: usize = 16;

/// The highest floor a version from the network can set. Versions are counters; one
/// near `u64::MAX` would pin a key's floor where no later write could pass it, so floors
/// stop here and leave 3 × 2^62 versions of headroom above.
pub(crate) const MAX_VERSION: u64 = 1 << 62;

/// The group counter follows floors up to here: half the range, so a counter pushed
/// there by a hostile floor still has 2^61 writes below [`MAX_VERSION`].
const COUNTER_FOLLOWS_TO: u64 = MAX_VERSION / 2;

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
    recent: Mutex<Recent>,
    warnings: Warnings,
}

/// Warnings of undelivered invalidations are logged at most once per this, per peer.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// When each peer was last warned about; only peers warned within [`WARN_EVERY`].
#[derive(Default)]
pub(crate) struct Warnings {
    last: Mutex<BTreeMap<Box<str>, Duration>>,
}

impl Warnings {
    /// Whether a warning about `peer` is due at `now`: none in the last [`WARN_EVERY`].
    /// If so, it counts as given.
    pub(crate) fn due(&self, peer: &str, now: Duration) -> bool {
        let mut last = self.last.lock();
        last.retain(|_, at| now.saturating_sub(*at) < WARN_EVERY);
        if last.contains_key(peer) {
            return false;
        }
        last.insert(peer.into(), now);
        true
    }
}

/// The latest write of each key written lately, at most [`RECENT_WRITES_MAX`] keys: a
/// hot key rewritten thousands of times takes one place.
#[derive(Default)]
struct Recent {
    /// Writes in the order of each key's latest: sequence → (key, version, when).
    order: BTreeMap<u64, (Box<str>, u64, Duration)>,
    /// Where each key's latest write sits in `order`. Looked up, never iterated.
    seq_of: HashMap<Box<str>, u64>,
    next_seq: u64,
}

impl Writes {
    /// A version above the key's `floor` and above every version the counter has
    /// handed out. The counter follows the floors it sees, so an owner new to a key
    /// mints above what earlier owners handed out for the keys it heard of; but only
    /// up to [`COUNTER_FOLLOWS_TO`]: a floor may come from the network, and one key's
    /// floor must not push every other key's versions out of the range peers accept.
    fn next_version(&self, floor: u64) -> u64 {
        let follow = floor.min(COUNTER_FOLLOWS_TO);
        let next = |c: u64| c.max(follow).saturating_add(1);
        let prev = self
            .versions
            .fetch_update(Relaxed, Relaxed, |c| Some(next(c)))
            .expect("the update always succeeds");
        next(prev).max(floor.saturating_add(1))
    }

    /// Notes a write applied at `now` (replacing the key's earlier one), forgetting
    /// those out of the window and the oldest beyond the limit.
    fn remember(&self, key: &str, version: u64, now: Duration) {
        let mut guard = self.recent.lock();
        let recent = &mut *guard;
        let mut version = version;
        if let Some(seq) = recent.seq_of.remove(key)
            && let Some((_, earlier, _)) = recent.order.remove(&seq)
        {
            version = version.max(earlier);
        }
        while recent.order.len() >= RECENT_WRITES_MAX
            || recent
                .order
                .first_key_value()
                .is_some_and(|(_, (_, _, at))| now.saturating_sub(*at) > RECENT_WRITES_WINDOW)
        {
            let Some((_, (old, _, _))) = recent.order.pop_first() else {
                break;
            };
            recent.seq_of.remove(&old);
        }
        let seq = recent.next_seq;
        recent.next_seq += 1;
        recent.order.insert(seq, (key.into(), version, now));
        recent.seq_of.insert(key.into(), seq);
    }

    /// Whether a write of `key` was applied or routed here within the window before `now`.
    pub(super) fn wrote_lately(&self, key: &str, now: Duration) -> bool {
        let recent = self.recent.lock();
        let Some(seq) = recent.seq_of.get(key) else {
            return false;
        };
        (recent.order.get(seq))
            .is_some_and(|(_, _, at)| now.saturating_sub(*at) <= RECENT_WRITES_WINDOW)
    }

    /// The latest write of each key still in the window at `now`, oldest first.
    fn recent(&self, now: Duration) -> Vec<(Box<str>, u64)> {
        self.recent
            .lock()
            .order
            .values()
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
    /// the owner; the last minute, at most 4096 keys, each at its latest write) to
    /// `peers`, members that just appeared in this node's view. While views disagreed
    /// (a member cut off from the registry, a late watch) a write reached only the
    /// members its owner knew; a member it did not know may hold an old copy, even as
    /// the key's owner in its own view, and the owner may have crashed before it could
    /// replay. Each invalidation is tried up to three times; returns how many were not
    /// delivered.
    pub async fn replay_writes(&self, peers: &[PeerRef]) -> usize {
        if buggify::planted(Bug::NoReplay) {
            return 0;
        }
        let writes = self.inner.writes.recent(self.inner.epoch.now());
        let replays = peers.iter().map(|peer| self.replay_to(peer, &writes));
        let failed: usize = join_all(replays).await.iter().sum();
        self.inner
            .counters
            .invalidations_failed
            .fetch_add(failed as u64, Relaxed);
        failed
    }

    /// Logs an invalidation `peer` did not receive: a warning at most once per
    /// [`WARN_EVERY`] per peer (a member that is down fails every write), else debug.
    fn not_delivered(&self, peer: &PeerRef, why: &PeerFailure) {
        let name = &self.inner.name;
        let now = self.inner.epoch.now();
        if self.inner.writes.warnings.due(peer.id(), now) {
            tracing::warn!(group = %name, peer = peer.id(), ?why, "invalidation not delivered; copies there expire within the hot TTL (warned at most every 10 s per peer)");
        } else {
            tracing::debug!(group = %name, peer = peer.id(), ?why, "invalidation not delivered");
        }
    }

    /// Sends `writes` to `peer`, a few at a time; how many were not delivered.
    async fn replay_to(&self, peer: &PeerRef, writes: &[(Box<str>, u64)]) -> usize {
        let name = &*self.inner.name;
        let sends: Vec<_> = writes
            .iter()
            .map(|(key, version)| resend(peer, name, key, *version))
            .collect();
        let failed = stream::iter(sends)
            .buffer_unordered(REPLAY_PARALLEL)
            .filter(|delivered| future::ready(!delivered))
            .count()
            .await;
        if failed > 0 {
            let why = PeerFailure::Unreachable(format!("{failed} replayed invalidations"));
            self.not_delivered(peer, &why);
        }
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
    /// copies, waiting until `deadline` (at most a second) for the trusted ones. The
    /// messages go out from tasks the node tracks, so a caller that gives up does not
    /// cancel them and shutdown waits for them; failures are counted, and any copy they
    /// miss expires within the hot TTL. A suspected member's message (refused at once,
    /// or the probe that ends its suspicion) is not waited for: when it answers again
    /// the write is replayed to it.
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
        let (trusted, suspected): (Vec<_>, Vec<_>) =
            (others.into_iter()).partition(|p| p.suspected_for().is_none());
        if !suspected.is_empty() {
            drop(self.invalidate_all(suspected, key, version, wait));
        }
        let _ = self.invalidate_all(trusted, key, version, wait).await;
        version
    }

    /// Sends the invalidation of `key` at `version` to `peers` from a tracked task,
    /// counting failures; the task's handle.
    fn invalidate_all(
        &self,
        peers: Vec<PeerRef>,
        key: &str,
        version: u64,
        wait: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let (group, key) = (self.clone(), key.to_owned());
        self.inner.tasks.spawn(async move {
            let name = &group.inner.name;
            let sends = peers.iter().map(|p| async {
                buggify::delay(Point::BeforeInvalidate).await;
                let sent = p.invalidate(name, &key, version, wait).await;
                sent.map_err(|why| group.not_delivered(p, &why))
            });
            let failed = join_all(sends).await.iter().filter(|r| r.is_err()).count();
            let counters = &group.inner.counters;
            counters
                .invalidations_failed
                .fetch_add(failed as u64, Relaxed);
        })
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
        inner.handoff.drop_entry(key, version);
        if let Some(negatives) = &inner.negatives {
            negatives.forget(key, version);
        }
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

/// Sends one replayed invalidation, trying again after a failure; whether it arrived.
async fn resend(peer: &PeerRef, group: &str, key: &str, version: u64) -> bool {
    for attempt in 0..REPLAY_ATTEMPTS {
        if attempt > 0 {
            time::sleep(REPLAY_BACKOFF * (1 << (attempt - 1))).await;
        }
        if peer
            .invalidate(group, key, version, INVALIDATE_DEADLINE)
            .await
            .is_ok()
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_is_due_once_per_peer_per_interval() {
        let w = Warnings::default();
        let at = Duration::from_secs;
        assert!(w.due("a", at(0)));
        assert!(!w.due("a", at(9)), "within 10 s");
        assert!(w.due("b", at(9)), "another peer");
        assert!(w.due("a", at(10)));
        assert!(!w.due("b", at(18)));
        assert!(w.due("b", at(19)));
        assert_eq!(w.last.lock().len(), 2, "only peers warned lately are kept");
        assert!(w.due("c", at(100)));
        assert_eq!(w.last.lock().len(), 1);
    }
}
