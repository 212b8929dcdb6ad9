//! A group: a named cache namespace with its own stores, limits, TTL and loader.
//!
//! ```text
//!  get(key) ── validate ──► main cache ── hit ────────────────────────────────► value
//!                               │ miss
//!                           hot cache ── hit (a copy of a peer's key) ────────► value
//!                               │ miss
//!                      singleflight(key) ── follower: share the leader's result
//!                               │ leader (re-checks both caches)
//!                               ▼
//!                 PeerPicker: who owns the key?
//!        self ─────────────┐                    peer P
//!                          │                      │ PeerClient::get(P, time left)
//!                          │                      │   ok ─► maybe keep a hot copy ─► value
//!                          │                      │   P's own error ─► returned as is
//!                          │                      │   P unreachable ─► count, load here,
//!                          ▼                      ▼   keep it briefly in the hot cache
//!               load flight(key)  ◄── also where requests from peers start: a
//!                          │          peer's request is never forwarded again
//!                          ▼
//!          version = store floor(key)        (newest write seen so far)
//!          Loader::load(key) ── error ─► counted, returned, never cached
//!                          │ ok
//!                          ▼
//!          insert at `version` ── refused if a Set/Remove came meanwhile
//! ```
//!
//! `set` and `remove` go to the owner, which stamps a version above every version seen
//! for the key, applies the write, and tells every other member to drop older copies
//! (`invalidate`). A fill that started before a write is refused by the store when it
//! completes, on every node, since copies carry the owner's version; writes also detach
//! the key's flights, so a get issued after a write never receives an older fill.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use parking_lot::Mutex;
use rand::Rng;
use rand::rngs::SmallRng;

use crate::clock::Clock;
use crate::loader::Loader;
use crate::peer::{Fetched, PeerPicker};
use crate::singleflight::SingleFlight;
use crate::store::{self, Entry, Rejected, Store};
use crate::{Error, Result};

mod builder;
pub mod hotkeys;
mod registry;
mod route;

pub use builder::{GroupBuilder, PolicyKind};
pub use registry::Registry;

/// Where a node's groups find the peer picker once the node has one.
pub(crate) type PeerSlot = Arc<OnceLock<Arc<PeerPicker>>>;

/// A named cache namespace. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Group {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    /// Keys this node owns.
    main: Box<dyn Store>,
    /// Short-lived copies of keys other members own, and local loads made while the
    /// owner was unreachable.
    hot: Option<Box<dyn Store>>,
    loader: Arc<dyn Loader>,
    /// Gets from this node's clients, one flight per key.
    flights: SingleFlight<Result<Bytes>>,
    /// Loads from this node's loader, shared by client gets and peers' requests.
    loads: SingleFlight<Result<Fetched>>,
    peers: PeerSlot,
    clock: Arc<dyn Clock>,
    ttl: Option<Duration>,
    jitter: f64,
    hot_cfg: HotConfig,
    doorkeeper: hotkeys::Doorkeeper,
    timeout: Option<Duration>,
    rng: Mutex<SmallRng>,
    max_key: usize,
    max_value: usize,
    versions: AtomicU64,
    /// Writes this node applied as owner lately: (key, version, when), oldest first.
    /// Replayed as invalidations to members that appear later (see `replay_writes`).
    recent_writes: Mutex<std::collections::VecDeque<(Box<str>, u64, Duration)>>,
    counters: Counters,
}

/// How a group keeps copies of keys it does not own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HotConfig {
    /// Longest a copy fetched from the owner is kept: the staleness bound when an
    /// invalidation is lost.
    pub ttl: Duration,
    /// Longest a value loaded here while its owner was unreachable (or while this node
    /// disagreed about ownership) is kept.
    pub fallback_ttl: Duration,
    /// Share of values fetched from peers that are kept at random (groupcache keeps one
    /// in ten); 0 keeps none this way (the default), 1 keeps all.
    pub fill_ratio: f64,
    /// Keep a value on its second fetch from the owner while the first is still
    /// remembered (a doorkeeper of recently fetched keys), so hot keys are kept early and
    /// keys fetched once take no room. On by default: `examples/hot_rule.rs` measures it
    /// against groupcache's random tenth (reports/hot-rule.md).
    pub second_fetch: bool,
}

impl Default for HotConfig {
    fn default() -> Self {
        HotConfig {
            ttl: Duration::from_secs(10),
            fallback_ttl: Duration::from_secs(1),
            fill_ratio: 0.0,
            second_fetch: true,
        }
    }
}

#[derive(Default)]
struct Counters {
    gets: AtomicU64,
    hits: AtomicU64,
    hot_hits: AtomicU64,
    loads: AtomicU64,
    loads_deduped: AtomicU64,
    local_load_errors: AtomicU64,
    peer_loads: AtomicU64,
    peer_errors: AtomicU64,
    served_to_peers: AtomicU64,
    invalidations_failed: AtomicU64,
}

/// A group's counters, in groupcache's spirit, plus its stores'.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GroupStats {
    /// `get` calls from this node's clients, valid or not.
    pub gets: u64,
    /// Of those, answered from this node's main or hot cache.
    pub hits: u64,
    /// Of the hits, answered from the hot cache.
    pub hot_hits: u64,
    /// Calls of this node's loader.
    pub loads: u64,
    /// Gets that shared a flight already under way instead of starting one.
    pub loads_deduped: u64,
    /// Loader calls that failed (including oversize values and panics).
    pub local_load_errors: u64,
    /// Values fetched from their owner.
    pub peer_loads: u64,
    /// Calls to a peer that did not reach it or timed out.
    pub peer_errors: u64,
    /// Get requests from peers that this node answered (or failed).
    pub served_to_peers: u64,
    /// Invalidations this node, as owner, could not deliver.
    pub invalidations_failed: u64,
    /// The main store's counters.
    pub store: store::Stats,
    /// The hot store's counters (zero when the group keeps no hot copies).
    pub hot: store::Stats,
}

impl Group {
    /// The group's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Limits on key and value length, in bytes.
    pub fn limits(&self) -> (usize, usize) {
        (self.inner.max_key, self.inner.max_value)
    }

    /// The group's counters and its stores'.
    pub fn stats(&self) -> GroupStats {
        let c = &self.inner.counters;
        GroupStats {
            gets: c.gets.load(Relaxed),
            hits: c.hits.load(Relaxed),
            hot_hits: c.hot_hits.load(Relaxed),
            loads: c.loads.load(Relaxed),
            loads_deduped: c.loads_deduped.load(Relaxed),
            local_load_errors: c.local_load_errors.load(Relaxed),
            peer_loads: c.peer_loads.load(Relaxed),
            peer_errors: c.peer_errors.load(Relaxed),
            served_to_peers: c.served_to_peers.load(Relaxed),
            invalidations_failed: c.invalidations_failed.load(Relaxed),
            store: self.inner.main.stats(),
            hot: self
                .inner
                .hot
                .as_ref()
                .map(|h| h.stats())
                .unwrap_or_default(),
        }
    }

    /// Whether this node holds `key` in its main cache (it owns it, or did).
    pub fn holds(&self, key: &str) -> bool {
        self.inner.main.get(key, self.inner.clock.now()).is_some()
    }

    /// Drops expired entries now (a bounded amount of work); returns how many.
    pub fn sweep(&self) -> usize {
        let now = self.inner.clock.now();
        let hot = self.inner.hot.as_ref().map_or(0, |h| h.sweep(now));
        self.inner.main.sweep(now) + hot
    }

    /// Drops main-cache entries of keys this node no longer owns, after a membership
    /// change. Writes to such a key go to its new owner and may never reach this node,
    /// so a copy kept here would be stale if the key came back (a node that rejoins
    /// after losing its lease, a joiner that leaves again). Returns how many it dropped.
    pub fn drop_unowned(&self) -> usize {
        match self.picker() {
            Some(picker) => self.inner.main.retain(&|key| picker.owns(key)),
            None => 0,
        }
    }

    fn picker(&self) -> Option<&Arc<PeerPicker>> {
        self.inner.peers.get()
    }

    /// Loads `key` from this node's loader into `store` (main when this node owns the
    /// key, hot otherwise), sharing the load with every concurrent asker on this node.
    async fn load_local(&self, key: &str, owned: bool) -> Result<Fetched> {
        let (result, role) = self
            .inner
            .loads
            .run(key, || self.load_into(key, owned))
            .await;
        if role == crate::singleflight::Role::Follower {
            self.inner.counters.loads_deduped.fetch_add(1, Relaxed);
        }
        result
    }

    /// The leader's half of a load: re-check, load, populate.
    async fn load_into(&self, key: &str, owned: bool) -> Result<Fetched> {
        let inner = &*self.inner;
        // A key this node does not own goes to the hot cache, briefly, or nowhere.
        let store = if owned {
            Some(&*inner.main)
        } else {
            inner.hot.as_deref()
        };
        let now = inner.clock.now();
        if let Some(hit) = store.and_then(|s| s.get(key, now)) {
            return Ok(self.fetched(hit));
        }
        // Read before loading: any Set/Remove from here on raises the floor above this.
        let version = store.map_or(0, |s| s.floor(key));
        inner.counters.loads.fetch_add(1, Relaxed);
        let loaded = AssertUnwindSafe(inner.loader.load(key))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(Error::load(panic_message(&*panic))));
        let value = loaded
            .and_then(|v| self.check_value(&v).map(|()| v))
            .inspect_err(|_| {
                inner.counters.local_load_errors.fetch_add(1, Relaxed);
            })?;
        // A key this node does not own lives no longer than the fallback TTL.
        let fallback = inner.hot_cfg.fallback_ttl;
        let ttl = (!owned).then(|| inner.ttl.map_or(fallback, |t| t.min(fallback)));
        let entry = Entry {
            value: value.clone(),
            version,
            expires_at: self.expiry(ttl),
        };
        let expires_in = entry
            .expires_at
            .map(|at| at.saturating_sub(inner.clock.now()));
        // Ownership moved during the load: the main cache keeps only owned keys.
        let store = store.filter(|_| !owned || self.owns(key));
        // Stale: a write landed during the load and wins; this caller still gets the
        // value it asked for, which was current when it asked.
        if let Some(store) = store {
            let _ = store.insert(key, entry);
        }
        Ok(Fetched {
            value,
            version,
            expires_in,
        })
    }

    fn fetched(&self, hit: store::Hit) -> Fetched {
        let now = self.inner.clock.now();
        Fetched {
            expires_in: hit.expires_at().map(|at| at.saturating_sub(now)),
            value: hit.value,
            version: hit.version,
        }
    }

    /// Applies a write as the key's owner: stores `value` (or removes the key when
    /// `None`) at a new version, which it returns.
    fn write_local(&self, key: &str, value: Option<Bytes>, ttl: Option<Duration>) -> u64 {
        let inner = &*self.inner;
        let version = self.next_version(key);
        let stored = match value {
            Some(value) => {
                let entry = Entry {
                    value,
                    version,
                    expires_at: self.expiry(ttl),
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
        let bar = |store: &dyn Store| store.floor(key).saturating_add(1).max(version);
        if let Some(hot) = &inner.hot {
            hot.remove(key, bar(&**hot));
        }
        if !keep_main {
            inner.main.remove(key, bar(&*inner.main));
        }
        inner.flights.forget(key);
        inner.loads.forget(key);
    }

    /// A version above every version this group has handed out or seen for `key`, and
    /// unique among this node's writes.
    fn next_version(&self, key: &str) -> u64 {
        let floor = self.inner.main.floor(key);
        let next = |c: u64| c.max(floor).saturating_add(1);
        let prev = self
            .inner
            .versions
            .fetch_update(Relaxed, Relaxed, |c| Some(next(c)))
            .expect("the update always succeeds");
        next(prev)
    }

    /// Absolute expiry for an entry written now with `ttl` (or the default), with jitter
    /// shortening it by up to the configured fraction.
    fn expiry(&self, ttl: Option<Duration>) -> Option<Duration> {
        let inner = &*self.inner;
        let ttl = ttl.or(inner.ttl)?;
        let ttl = if inner.jitter > 0.0 {
            let cut: f64 = inner.rng.lock().random_range(0.0..inner.jitter);
            // From f64 seconds, so even a TTL near `Duration::MAX` cannot panic.
            Duration::try_from_secs_f64(ttl.as_secs_f64() * (1.0 - cut)).unwrap_or(ttl)
        } else {
            ttl
        };
        // A huge TTL saturates to "practically never" instead of overflowing.
        Some(inner.clock.now().saturating_add(ttl))
    }

    fn check_key(&self, key: &str) -> Result<()> {
        match key.len() {
            0 => Err(Error::EmptyKey),
            len if len > self.inner.max_key => Err(Error::KeyTooLong {
                len,
                max: self.inner.max_key,
            }),
            _ => Ok(()),
        }
    }

    fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() > self.inner.max_value {
            return Err(Error::ValueTooLarge {
                len: value.len(),
                max: self.inner.max_value,
            });
        }
        Ok(())
    }
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
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
