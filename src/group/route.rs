//! The distributed half of a group: routing gets and writes to the key's owner, and
//! answering requests that come from peers.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use rand::Rng;

use super::Group;
use crate::peer::{Fetched, PeerClient, PeerFailure, Pick};
use crate::singleflight::Role;
use crate::store::Entry;
use crate::{Error, Result};

/// Time allowed for a peer call when the group sets no request timeout.
const DEFAULT_PEER_DEADLINE: Duration = Duration::from_secs(5);
/// Longest the owner waits for other members to confirm an invalidation.
const INVALIDATE_DEADLINE: Duration = Duration::from_secs(1);
/// How long, and how many, writes an owner remembers to replay to members it sees later.
const RECENT_WRITES_WINDOW: Duration = Duration::from_secs(60);
const RECENT_WRITES_MAX: usize = 4096;

impl Group {
    /// Returns the value of `key`: from this node's caches, from the key's owner, or
    /// through the loader when this node owns the key (or the owner is unreachable).
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        let inner = &*self.inner;
        inner.counters.gets.fetch_add(1, Relaxed);
        self.check_key(key)?;
        if let Some(value) = self.cached(key) {
            return Ok(value);
        }
        let deadline = self.deadline();
        let flight = inner.flights.run(key, || self.fetch(key, deadline));
        let (result, role) = self.within(deadline, flight).await?;
        if role == Role::Follower {
            inner.counters.loads_deduped.fetch_add(1, Relaxed);
        }
        result
    }

    /// Stores `value` under `key` with `ttl` (or the group default) through the key's
    /// owner, at a new version, which it returns. In-flight fills of the key, here or
    /// anywhere, will not overwrite it.
    pub async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64> {
        self.check_key(key)?;
        self.check_value(&value)?;
        self.write(key, Some(value), ttl).await
    }

    /// Drops `key` through its owner at a new version, which it returns. In-flight fills
    /// of the key will not bring the old value back.
    pub async fn remove(&self, key: &str) -> Result<u64> {
        self.check_key(key)?;
        self.write(key, None, None).await
    }

    /// Answers a peer's get: this node is the owner in the peer's view. Never forwarded:
    /// if this node disagrees about ownership it loads locally and keeps the value only
    /// briefly.
    pub async fn get_for_peer(&self, key: &str, deadline: Duration) -> Result<Fetched> {
        let inner = &*self.inner;
        inner.counters.served_to_peers.fetch_add(1, Relaxed);
        self.check_key(key)?;
        let now = inner.clock.now();
        if let Some(hit) = inner
            .main
            .get(key, now)
            .filter(|hit| self.keep_main_hit(key, hit))
        {
            return Ok(self.fetched(hit));
        }
        let owned = self.owns(key);
        let at = Some(now.saturating_add(deadline));
        self.within(at, self.load_local(key, owned)).await?
    }

    /// Applies a peer's write: this node is the owner in the peer's view, so it applies
    /// the write without forwarding it, whatever its own view says.
    pub async fn write_for_peer(
        &self,
        key: &str,
        value: Option<Bytes>,
        ttl: Option<Duration>,
        deadline: Duration,
    ) -> Result<u64> {
        self.check_key(key)?;
        if let Some(v) = &value {
            self.check_value(v)?;
        }
        let at = self.inner.clock.now().saturating_add(deadline);
        Ok(self.write_as_owner(key, value, ttl, Some(at)).await)
    }

    /// Drops this node's copies of `key` older than `version`, as the owner asks after
    /// a write.
    pub fn invalidate(&self, key: &str, version: u64) -> Result<()> {
        self.check_key(key)?;
        check_version(version)?;
        self.drop_copies(key, version, false);
        Ok(())
    }

    /// A hit in the main or the hot cache.
    fn cached(&self, key: &str) -> Option<Bytes> {
        let inner = &*self.inner;
        let now = inner.clock.now();
        let hit = match inner
            .main
            .get(key, now)
            .filter(|hit| self.keep_main_hit(key, hit))
        {
            Some(hit) => hit,
            None => {
                let hit = inner.hot.as_ref()?.get(key, now)?;
                inner.counters.hot_hits.fetch_add(1, Relaxed);
                hit
            }
        };
        inner.counters.hits.fetch_add(1, Relaxed);
        Some(hit.value)
    }

    /// Whether this node owns `key` in its current view (always, without peers).
    pub(super) fn owns(&self, key: &str) -> bool {
        self.picker().is_none_or(|p| p.owns(key))
    }

    /// A main-cache entry is served only while this node owns its key. After membership
    /// moved the key elsewhere it is dropped: the new owner may take writes this node
    /// never hears of.
    fn keep_main_hit(&self, key: &str, hit: &crate::store::Hit) -> bool {
        if self.owns(key) {
            return true;
        }
        self.inner.main.remove(key, hit.version.saturating_add(1));
        false
    }

    /// The leader's half of a client get: re-check, then the owner or the loader.
    async fn fetch(&self, key: &str, deadline: Option<Duration>) -> Result<Bytes> {
        if let Some(value) = self.cached(key) {
            return Ok(value);
        }
        let peer = match self.picker().map(|p| p.pick(key)) {
            Some(Pick::Peer(peer)) => peer,
            Some(Pick::Local) | None => return self.load_local(key, true).await.map(|f| f.value),
        };
        let counters = &self.inner.counters;
        // Read before asking: an invalidation from here on refuses the copy we get back.
        let hot_floor = self.inner.hot.as_ref().map(|h| h.floor(key));
        match peer
            .get(&self.inner.name, key, self.time_left(deadline))
            .await
        {
            Ok(fetched) => {
                counters.peer_loads.fetch_add(1, Relaxed);
                if let Some(floor) = hot_floor {
                    self.keep_hot(key, &fetched, floor);
                }
                Ok(fetched.value)
            }
            // An owner that lacks the group (a rolling deploy) cannot serve it either.
            Err(PeerFailure::Answered(Error::UnknownGroup(_))) => {
                counters.peer_errors.fetch_add(1, Relaxed);
                self.load_local(key, false).await.map(|f| f.value)
            }
            Err(PeerFailure::Answered(e)) => Err(e),
            Err(PeerFailure::Unreachable(why)) => {
                counters.peer_errors.fetch_add(1, Relaxed);
                if deadline.is_some_and(|at| self.inner.clock.now() >= at) {
                    return Err(Error::Timeout);
                }
                tracing::warn!(group = %self.inner.name, peer = peer.id(), %why, "owner unreachable; loading locally");
                self.load_local(key, false).await.map(|f| f.value)
            }
        }
    }

    /// Keeps values fetched from owners as short-lived hot copies: those fetched again
    /// soon (see `hotkeys`) and a sampled share of the rest.
    fn keep_hot(&self, key: &str, fetched: &Fetched, floor: u64) {
        let inner = &*self.inner;
        let Some(hot) = &inner.hot else { return };
        if check_version(fetched.version).is_err() {
            return;
        }
        let cfg = &inner.hot_cfg;
        let again = cfg.second_fetch && inner.doorkeeper.seen_again(crate::store::key_hash(key));
        let sampled = cfg.fill_ratio >= 1.0
            || (cfg.fill_ratio > 0.0 && inner.rng.lock().random_bool(cfg.fill_ratio));
        if !(again || sampled) {
            return;
        }
        let ttl = match fetched.expires_in {
            Some(left) => left.min(inner.hot_cfg.ttl),
            None => inner.hot_cfg.ttl,
        };
        let entry = Entry {
            value: fetched.value.clone(),
            // The owner's version, but never below what this node had seen when it
            // asked, so an invalidation that overtook the answer still wins.
            version: fetched.version.max(floor),
            expires_at: Some(inner.clock.now().saturating_add(ttl)),
        };
        let _ = hot.insert(key, entry);
    }

    /// Routes a write to the key's owner.
    async fn write(&self, key: &str, value: Option<Bytes>, ttl: Option<Duration>) -> Result<u64> {
        let peer = match self.picker().map(|p| p.pick(key)) {
            Some(Pick::Peer(peer)) => peer,
            Some(Pick::Local) | None => {
                return Ok(self.write_as_owner(key, value, ttl, self.deadline()).await);
            }
        };
        let deadline = self.deadline();
        let left = self.time_left(deadline);
        let name = &self.inner.name;
        let sent = match value {
            Some(value) => peer.set(name, key, value, ttl, left).await,
            None => peer.remove(name, key, left).await,
        };
        match sent {
            Ok(version) => {
                // The owner invalidates us too; dropping here as well makes this node
                // read its own write even if that message is slow.
                self.drop_copies(key, version, false);
                Ok(version)
            }
            Err(PeerFailure::Answered(e)) => Err(e),
            Err(PeerFailure::Unreachable(why)) => {
                self.inner.counters.peer_errors.fetch_add(1, Relaxed);
                tracing::debug!(group = %name, key, peer = peer.id(), %why, "owner unreachable; write refused");
                // Whatever we held may be outdated by the write the caller attempted.
                self.drop_copies(key, 0, false);
                Err(Error::Unavailable(format!(
                    "owner {} of the key: {why}",
                    peer.id()
                )))
            }
        }
    }

    /// Applies a write here as the owner, then tells every other member to drop older
    /// copies, waiting until `deadline` (at most a second) for them. The messages go out
    /// from a task of their own, so a caller that gives up does not cancel them; failures
    /// are counted, and any copy they miss expires within the hot TTL.
    async fn write_as_owner(
        &self,
        key: &str,
        value: Option<Bytes>,
        ttl: Option<Duration>,
        deadline: Option<Duration>,
    ) -> u64 {
        let version = self.write_local(key, value, ttl);
        self.remember_write(key, version);
        let others = self.picker().map(|p| p.others()).unwrap_or_default();
        if others.is_empty() {
            return version;
        }
        let wait = self.time_left(deadline).min(INVALIDATE_DEADLINE);
        let (group, key_owned) = (self.clone(), key.to_owned());
        let fan_out = tokio::spawn(async move {
            let name = &group.inner.name;
            let sends = others
                .iter()
                .map(|p: &PeerClient| p.invalidate(name, &key_owned, version, wait));
            let failed = join_all(sends).await.iter().filter(|r| r.is_err()).count();
            if failed > 0 {
                group
                    .inner
                    .counters
                    .invalidations_failed
                    .fetch_add(failed as u64, Relaxed);
                tracing::debug!(group = %name, failed, "invalidations not delivered");
            }
        });
        let _ = fan_out.await;
        version
    }

    /// Notes a write applied as owner, for [`Group::replay_writes`].
    fn remember_write(&self, key: &str, version: u64) {
        let now = self.inner.clock.now();
        let mut recent = self.inner.recent_writes.lock();
        while recent.len() >= RECENT_WRITES_MAX
            || recent
                .front()
                .is_some_and(|(_, _, at)| now.saturating_sub(*at) > RECENT_WRITES_WINDOW)
        {
            recent.pop_front();
        }
        recent.push_back((key.into(), version, now));
    }

    /// Sends invalidations of this node's recent writes (the last minute, at most 4096)
    /// to `peers`, members that just appeared in this node's view. While views disagreed
    /// (a member cut off from the registry, a late watch) a write reached only the
    /// members its owner knew; a member it did not know may hold an old copy, even as the
    /// key's owner in its own view. Returns how many invalidations were not delivered.
    pub async fn replay_writes(&self, peers: &[PeerClient]) -> usize {
        let now = self.inner.clock.now();
        let writes: Vec<(Box<str>, u64)> = self
            .inner
            .recent_writes
            .lock()
            .iter()
            .filter(|(_, _, at)| now.saturating_sub(*at) <= RECENT_WRITES_WINDOW)
            .map(|(k, v, _)| (k.clone(), *v))
            .collect();
        let name = &self.inner.name;
        let mut failed = 0;
        for peer in peers {
            for (key, version) in &writes {
                if peer
                    .invalidate(name, key, *version, INVALIDATE_DEADLINE)
                    .await
                    .is_err()
                {
                    failed += 1;
                }
            }
        }
        if failed > 0 {
            let counters = &self.inner.counters;
            counters
                .invalidations_failed
                .fetch_add(failed as u64, Relaxed);
        }
        failed
    }

    /// The absolute deadline of a request starting now, if the group has a timeout.
    fn deadline(&self) -> Option<Duration> {
        let timeout = self.inner.timeout?;
        Some(self.inner.clock.now().saturating_add(timeout))
    }

    /// Time left until `deadline` (or the default peer deadline when there is none).
    fn time_left(&self, deadline: Option<Duration>) -> Duration {
        match deadline {
            Some(at) => at.saturating_sub(self.inner.clock.now()),
            None => DEFAULT_PEER_DEADLINE,
        }
    }

    /// Runs `work`, giving up with [`Error::Timeout`] at `deadline` (on the group's clock).
    async fn within<T>(
        &self,
        deadline: Option<Duration>,
        work: impl Future<Output = T>,
    ) -> Result<T> {
        let Some(at) = deadline else {
            return Ok(work.await);
        };
        let left = at.saturating_sub(self.inner.clock.now());
        tokio::select! {
            biased;
            out = work => Ok(out),
            () = self.inner.clock.sleep(left) => Err(Error::Timeout),
        }
    }
}

/// Versions are counters; one near `u64::MAX` from the network would pin a key's floor
/// where no later write could pass it.
pub(crate) const MAX_VERSION: u64 = 1 << 62;

fn check_version(version: u64) -> Result<()> {
    if version > MAX_VERSION {
        return Err(Error::Invalid(format!("version {version} is out of range")));
    }
    Ok(())
}
