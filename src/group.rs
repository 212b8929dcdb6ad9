//! A group: a named cache namespace with its own store, limits, TTL and loader.
//!
//! ```text
//!  get(key) ── validate ──► main cache ── hit ──────────────────────────► value
//!                               │ miss
//!                               ▼
//!                      singleflight(key) ── follower: share the leader's result
//!                               │ leader
//!                               ▼
//!                     main cache again (filled while we queued?) ── hit ─► value
//!                               │ miss
//!                               ▼
//!                 version = store floor(key)        (newest write seen so far)
//!                 Loader::load(key) ── error ─► counted, returned, never cached
//!                               │ ok
//!                               ▼
//!                 insert at `version` ── refused if a Set/Remove came meanwhile
//!                               ▼
//!                             value
//! ```
//!
//! `set` and `remove` stamp a version above every version seen for the key, so a fill
//! that started before them is refused by the store when it completes; they also detach
//! the key's flight, so a get issued after them never receives that fill's value.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use parking_lot::Mutex;
use rand::Rng;
use rand::rngs::SmallRng;

use crate::clock::Clock;
use crate::loader::Loader;
use crate::singleflight::{Role, SingleFlight};
use crate::store::{self, Entry, Rejected, Store};
use crate::{Error, Result};

mod builder;
mod registry;

pub use builder::{GroupBuilder, PolicyKind};
pub use registry::Registry;

/// A named cache namespace. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Group {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    store: Box<dyn Store>,
    loader: Arc<dyn Loader>,
    flights: SingleFlight<Result<Bytes>>,
    clock: Arc<dyn Clock>,
    ttl: Option<Duration>,
    jitter: f64,
    rng: Mutex<SmallRng>,
    max_key: usize,
    max_value: usize,
    versions: AtomicU64,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    gets: AtomicU64,
    hits: AtomicU64,
    loads: AtomicU64,
    loads_deduped: AtomicU64,
    local_load_errors: AtomicU64,
}

/// A group's counters, in groupcache's spirit, plus its store's.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GroupStats {
    /// `get` calls, valid or not.
    pub gets: u64,
    /// Gets answered from the cache.
    pub hits: u64,
    /// Calls of this group's loader.
    pub loads: u64,
    /// Gets that shared a load already in flight instead of starting one.
    pub loads_deduped: u64,
    /// Loader calls that failed (including oversize values and panics).
    pub local_load_errors: u64,
    /// The main store's counters.
    pub store: store::Stats,
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

    /// Returns the value of `key`, loading it through the loader on a miss.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        let inner = &*self.inner;
        inner.counters.gets.fetch_add(1, Relaxed);
        self.check_key(key)?;
        if let Some(hit) = inner.store.get(key, inner.clock.now()) {
            inner.counters.hits.fetch_add(1, Relaxed);
            return Ok(hit.value);
        }
        let (result, role) = inner.flights.run(key, || self.load(key)).await;
        if role == Role::Follower {
            inner.counters.loads_deduped.fetch_add(1, Relaxed);
        }
        result
    }

    /// The leader's half of a miss: re-check, load, populate.
    async fn load(&self, key: &str) -> Result<Bytes> {
        let inner = &*self.inner;
        if let Some(hit) = inner.store.get(key, inner.clock.now()) {
            inner.counters.hits.fetch_add(1, Relaxed);
            return Ok(hit.value);
        }
        // Read before loading: any Set/Remove from here on raises the floor above this.
        let version = inner.store.floor(key);
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
        let entry = Entry {
            value: value.clone(),
            version,
            expires_at: self.expiry(None),
        };
        // Stale: a write landed during the load and wins; this caller still gets the
        // value it asked for, which was current when it asked.
        let _ = inner.store.insert(key, entry);
        Ok(value)
    }

    /// Stores `value` under `key` with `ttl` (or the group default) at a new version,
    /// which it returns. In-flight fills of the key will not overwrite it.
    pub async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64> {
        self.check_key(key)?;
        self.check_value(&value)?;
        let version = self.next_version(key);
        let entry = Entry {
            value,
            version,
            expires_at: self.expiry(ttl),
        };
        let stored = self.inner.store.insert(key, entry);
        self.inner.flights.forget(key);
        match stored {
            // Stale: a newer write to this key (or to one sharing its version slot) came
            // first. The store dropped any older entry of this key, so the next get loads
            // from the source, which a cache-aside writer has already updated.
            Ok(()) | Err(Rejected::Stale) => Ok(version),
            Err(Rejected::TooLarge) => {
                unreachable!("the builder sizes buckets for the largest allowed entry")
            }
        }
    }

    /// Drops `key` at a new version, which it returns. In-flight fills of the key will
    /// not bring the old value back.
    pub async fn remove(&self, key: &str) -> Result<u64> {
        self.check_key(key)?;
        let version = self.next_version(key);
        self.inner.store.remove(key, version);
        self.inner.flights.forget(key);
        Ok(version)
    }

    /// The group's counters and its store's.
    pub fn stats(&self) -> GroupStats {
        let c = &self.inner.counters;
        GroupStats {
            gets: c.gets.load(Relaxed),
            hits: c.hits.load(Relaxed),
            loads: c.loads.load(Relaxed),
            loads_deduped: c.loads_deduped.load(Relaxed),
            local_load_errors: c.local_load_errors.load(Relaxed),
            store: self.inner.store.stats(),
        }
    }

    /// Drops expired entries now (a bounded amount of work); returns how many.
    pub fn sweep(&self) -> usize {
        self.inner.store.sweep(self.inner.clock.now())
    }

    /// A version above every version this group has handed out or seen for `key`.
    fn next_version(&self, key: &str) -> u64 {
        let floor = self.inner.store.floor(key);
        let v = (self.inner.versions.fetch_add(1, Relaxed) + 1).max(floor + 1);
        self.inner.versions.fetch_max(v, Relaxed);
        v
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
