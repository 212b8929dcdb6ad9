//! Filling the cache from this node's loader: one load flight per key, shared by the
//! node's clients and its peers, and a versioned insert that a concurrent write wins.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures::FutureExt;
use parking_lot::Mutex;
use rand::Rng;
use rand::rngs::SmallRng;

use super::Group;
use crate::buggify::{self, Bug, Point};
use crate::error::{Error, Result};
use crate::peer::Fetched;
use crate::singleflight::Role;
use crate::store::{Entry, Hit, Store};
use crate::time;

/// A group's entry lifetimes: the default TTL and its jitter.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ttl {
    /// Default time to live; `None` keeps entries until evicted.
    pub(super) default: Option<Duration>,
    /// Each TTL is shortened by a random fraction in `[0, jitter)`.
    pub(super) jitter: f64,
}

impl Ttl {
    /// Absolute expiry (since the group's epoch) of an entry written at `now` with `ttl`
    /// (or the default), jitter applied.
    pub(super) fn expiry(
        &self,
        ttl: Option<Duration>,
        now: Duration,
        rng: &Mutex<SmallRng>,
    ) -> Option<Duration> {
        let ttl = ttl.or(self.default)?;
        let ttl = if self.jitter > 0.0 {
            let cut: f64 = rng.lock().random_range(0.0..self.jitter);
            // From f64 seconds, so even a TTL near `Duration::MAX` cannot panic.
            Duration::try_from_secs_f64(ttl.as_secs_f64() * (1.0 - cut)).unwrap_or(ttl)
        } else {
            ttl
        };
        // A huge TTL saturates to "practically never" instead of overflowing.
        Some(now.saturating_add(ttl))
    }
}

impl Group {
    /// Loads `key` from this node's loader into the main cache when this node owns the
    /// key (`owned`), into the hot cache briefly otherwise, sharing the load with every
    /// concurrent asker on this node, client or peer. The load is a task of its own,
    /// bounded by the group's timeout, not by the caller that started it: a caller that
    /// gives up (a client, a peer whose deadline passed) leaves it to finish for the
    /// others, and the value is cached.
    pub(super) async fn load(&self, key: &str, owned: bool) -> Result<Fetched> {
        let inner = &*self.inner;
        if buggify::planted(Bug::LoadPerGet) {
            return self.load_into(key, owned).await;
        }
        if let Some(negatives) = &inner.negatives
            && negatives.holds(key, inner.epoch.now())
        {
            inner.counters.negative_hits.fetch_add(1, Relaxed);
            return Err(Error::NotFound(format!(
                "{key:?} is not in the source (remembered for the negative TTL)"
            )));
        }
        let work = || {
            let (group, key, deadline) = (self.clone(), key.to_owned(), self.deadline());
            async move {
                let loaded = time::until(deadline, group.load_into(&key, owned)).await;
                loaded.and_then(|fetched| fetched)
            }
        };
        let (result, role) = inner.loads.run_detached(key, work).await;
        if role == Role::Follower {
            inner.counters.loads_deduped.fetch_add(1, Relaxed);
        }
        result
    }

    /// The leader's half of a load: re-check, load, populate.
    async fn load_into(&self, key: &str, owned: bool) -> Result<Fetched> {
        let inner = &*self.inner;
        let store = if owned {
            Some(&*inner.main)
        } else {
            inner.hot.store()
        };
        if let Some(hit) = store.and_then(|s| s.get(key, inner.epoch.now())) {
            return Ok(self.fetched(hit));
        }
        // Read before loading: any Set/Remove from here on raises the floor above this.
        let version = store.map_or(0, |s| s.floor(key));
        // A key that moved here lately: its entry from where it was, if any is left.
        if owned && let Some(handed) = self.take_handed(key, version).await {
            return Ok(handed);
        }
        inner.counters.loads.fetch_add(1, Relaxed);
        let loaded = AssertUnwindSafe(inner.loader.load_within(key, inner.limits.max_value))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(Error::load(panic_message(&*panic))));
        let loaded = match loaded {
            Err(_) if buggify::planted(Bug::ErrorCached) => Ok(bytes::Bytes::new()),
            loaded => loaded,
        };
        if let (Err(Error::NotFound(_)), Some(negatives), true) = (&loaded, &inner.negatives, owned)
        {
            negatives.remember(key, version, inner.epoch.now());
        }
        let value = loaded
            .and_then(|v| inner.limits.check_value(&v).map(|()| v))
            // The source's fault, not the caller's: a failed load (502), not a 413.
            .map_err(|e| match e {
                Error::ValueTooLarge { len, max } => Error::load(format!(
                    "the source's value is {len} bytes: exceeds the {max}-byte limit"
                )),
                e => e,
            })
            .inspect_err(|_| {
                inner.counters.local_load_errors.fetch_add(1, Relaxed);
            })?;
        let now = inner.epoch.now();
        // A key this node does not own lives no longer than the fallback TTL (longer
        // while its owner is suspected).
        let ttl = (!owned).then(|| {
            let suspected = match self.pick(key) {
                crate::peer::Pick::Peer(owner) => owner.suspected_for().is_some(),
                crate::peer::Pick::Local => false,
            };
            inner.hot.fallback_ttl(inner.ttl.default, suspected)
        });
        let expires_at = inner.ttl.expiry(ttl, now, &inner.rng);
        // Ownership moved during the load: the main cache keeps only owned keys.
        // A write that landed during the load wins (the insert is refused as stale);
        // this caller still gets the value it asked for, current when it asked.
        buggify::delay(Point::FillBeforeInsert).await;
        if let Some(store) = store.filter(|_| !owned || self.owns(key)) {
            let version = match buggify::planted(Bug::FillIgnoresFloor) {
                true => store.floor(key),
                false => version,
            };
            let entry = Entry {
                value: value.clone(),
                version,
                expires_at,
            };
            let _ = store.insert(key, entry);
        }
        Ok(Fetched {
            value,
            version,
            expires_in: expires_at.map(|at| at.saturating_sub(now)),
            hot: false,
            packed: None,
        })
    }

    /// A hit as a peer receives it.
    pub(super) fn fetched(&self, hit: Hit) -> Fetched {
        let now = self.inner.epoch.now();
        Fetched {
            expires_in: hit.expires_at().map(|at| at.saturating_sub(now)),
            value: hit.value,
            version: hit.version,
            hot: false,
            packed: None,
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let msg = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    format!("loader panicked: {msg}")
}

/// Keys the loader lacked, each remembered for the negative TTL at the version the
/// load read, so a write during the load refuses it and a write after drops it.
pub(super) struct Negatives {
    store: Box<dyn Store>,
    ttl: Duration,
}

impl Negatives {
    pub(super) fn new(store: Box<dyn Store>, ttl: Duration) -> Self {
        Negatives { store, ttl }
    }

    /// Whether `key` is known missing at `now`.
    pub(super) fn holds(&self, key: &str, now: Duration) -> bool {
        self.store.get(key, now).is_some()
    }

    /// Notes that a load begun at `version` found `key` missing at `now`.
    fn remember(&self, key: &str, version: u64, now: Duration) {
        let entry = Entry {
            value: bytes::Bytes::new(),
            version,
            expires_at: Some(now.saturating_add(self.ttl)),
        };
        let _ = self.store.insert(key, entry);
    }

    /// Forgets `key` after a write stamped `version`.
    pub(super) fn forget(&self, key: &str, version: u64) {
        self.store.purge(key, version);
    }

    /// Keeps only the keys `keep` says.
    pub(super) fn retain(&self, keep: &dyn Fn(&str) -> bool) -> usize {
        self.store.retain(keep)
    }
}
