//! Configuration of a group, checked once when it is built.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::{Counters, Group, HotConfig, Inner, Registry};
use crate::loader::Loader;
use crate::singleflight::SingleFlight;
use crate::store::{self, Listener, Lru, Lru2, Sharded, Store};
use crate::{Error, Result};

/// Default capacity of a group's main cache.
pub const DEFAULT_CAPACITY: u64 = 64 << 20;
/// Default longest key, in bytes.
pub const DEFAULT_MAX_KEY: usize = 1024;
/// Default largest value, in bytes (lowered automatically for small groups).
pub const DEFAULT_MAX_VALUE: usize = 1 << 20;
/// Most buckets a store is split into by default.
const MAX_BUCKETS: u64 = 16;
/// A bucket holds at least this many largest-size entries, or the group uses fewer.
const ENTRIES_PER_BUCKET: u64 = 4;

/// Which replacement policy the main cache uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PolicyKind {
    /// Plain least recently used.
    Lru,
    /// Two-level LRU; `protected` is level 2's share of capacity (0..=1).
    Lru2 {
        /// Level 2's share of capacity.
        protected: f64,
    },
}

impl Default for PolicyKind {
    fn default() -> Self {
        PolicyKind::Lru2 {
            protected: store::lru2::DEFAULT_PROTECTED,
        }
    }
}

/// Builds a [`Group`] and registers it; made by [`Registry::group`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct GroupBuilder {
    registry: Registry,
    name: String,
    capacity: u64,
    policy: PolicyKind,
    buckets: Option<usize>,
    ttl: Option<Duration>,
    jitter: f64,
    max_key: usize,
    max_value: Option<usize>,
    loader: Option<Arc<dyn Loader>>,
    listener: Option<Listener>,
    hot_capacity: Option<u64>,
    hot: HotConfig,
    timeout: Option<Duration>,
}

impl GroupBuilder {
    pub(super) fn new(registry: Registry, name: String) -> Self {
        GroupBuilder {
            registry,
            name,
            capacity: DEFAULT_CAPACITY,
            policy: PolicyKind::default(),
            buckets: None,
            ttl: None,
            jitter: 0.0,
            max_key: DEFAULT_MAX_KEY,
            max_value: None,
            loader: None,
            listener: None,
            hot_capacity: None,
            hot: HotConfig::default(),
            timeout: None,
        }
    }

    /// Main cache capacity in bytes (keys + values + per-entry overhead).
    pub fn capacity(mut self, bytes: u64) -> Self {
        self.capacity = bytes;
        self
    }

    /// Replacement policy of the main cache.
    pub fn policy(mut self, policy: PolicyKind) -> Self {
        self.policy = policy;
        self
    }

    /// Number of lock buckets (rounded up to a power of two); chosen from the capacity
    /// and the largest entry when not set.
    pub fn buckets(mut self, buckets: usize) -> Self {
        self.buckets = Some(buckets);
        self
    }

    /// Default time to live of entries; none means entries never expire.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Shortens each entry's TTL by a random fraction in `[0, jitter)` so entries written
    /// together do not expire together.
    pub fn ttl_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Longest accepted key, in bytes.
    pub fn max_key_len(mut self, bytes: usize) -> Self {
        self.max_key = bytes;
        self
    }

    /// Largest accepted value, in bytes.
    pub fn max_value_len(mut self, bytes: usize) -> Self {
        self.max_value = Some(bytes);
        self
    }

    /// Where misses are loaded from. Required.
    pub fn loader(mut self, loader: impl Loader) -> Self {
        self.loader = Some(Arc::new(loader));
        self
    }

    /// Capacity of the hot cache, which keeps short-lived copies of keys other members
    /// own; 0 disables it. Default: an eighth of the main capacity.
    pub fn hot_capacity(mut self, bytes: u64) -> Self {
        self.hot_capacity = Some(bytes);
        self
    }

    /// How hot copies are sampled and how long they live.
    pub fn hot(mut self, hot: HotConfig) -> Self {
        self.hot = hot;
        self
    }

    /// Longest a get, set or remove may take (including the peer call and the load)
    /// before it fails with [`Error::Timeout`]; the time left travels to the owner.
    /// Default: no limit of its own, each peer call is still bounded.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Where misses are loaded from, shared with other groups.
    pub fn loader_arc(mut self, loader: Arc<dyn Loader>) -> Self {
        self.loader = Some(loader);
        self
    }

    /// Called with every entry the main cache evicts or expires.
    pub fn on_evict(mut self, listener: Listener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Checks the configuration, builds the group and registers it under its name.
    pub fn build(self) -> Result<Group> {
        let config = |msg: String| Err(Error::Config(format!("group {:?}: {msg}", self.name)));
        if self.name.is_empty() {
            return config("name must not be empty".into());
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return config(format!("ttl jitter {} is not in [0, 1)", self.jitter));
        }
        if self.ttl == Some(Duration::ZERO) {
            return config("ttl must be positive".into());
        }
        if self.max_key == 0 {
            return config("max key length must be positive".into());
        }
        if let PolicyKind::Lru2 { protected } = self.policy
            && !(0.0..=1.0).contains(&protected)
        {
            return config(format!("LRU2 level-2 share {protected} is not in [0, 1]"));
        }
        if !(0.0..=1.0).contains(&self.hot.fill_ratio) {
            return config(format!(
                "hot fill ratio {} is not in [0, 1]",
                self.hot.fill_ratio
            ));
        }
        if self.hot.ttl.is_zero() || self.hot.fallback_ttl.is_zero() {
            return config("hot and fallback TTLs must be positive".into());
        }
        if self.timeout == Some(Duration::ZERO) {
            return config("timeout must be positive".into());
        }
        let Some(loader) = self.loader.clone() else {
            return config("a loader is required".into());
        };
        let key_room = store::ENTRY_OVERHEAD.saturating_add(self.max_key as u64);
        if key_room > self.capacity {
            return config(format!(
                "capacity {} cannot hold a {}-byte key",
                self.capacity, self.max_key
            ));
        }
        let room = self.capacity - key_room;
        let max_value = match self.max_value {
            Some(v) if v as u64 > room => {
                return config(format!(
                    "capacity {} cannot hold a {v}-byte value with a {}-byte key",
                    self.capacity, self.max_key
                ));
            }
            Some(v) => v,
            None if room == 0 => {
                return config(format!(
                    "capacity {} cannot hold a {}-byte key",
                    self.capacity, self.max_key
                ));
            }
            None => DEFAULT_MAX_VALUE.min(room as usize),
        };
        // Both limits fit in `capacity` here, so this cannot overflow.
        let largest = store::ENTRY_OVERHEAD + self.max_key as u64 + max_value as u64;
        let buckets = match self.buckets {
            Some(b) => b.max(1).next_power_of_two(),
            None => auto_buckets(self.capacity, largest),
        };
        if self.capacity / (buckets as u64) < largest {
            return config(format!(
                "{buckets} buckets of {} bytes cannot hold the largest entry ({largest} bytes)",
                self.capacity / buckets as u64
            ));
        }
        let store: Box<dyn Store> = match self.policy {
            PolicyKind::Lru => {
                Box::new(self.listen(Sharded::new(self.capacity, buckets, Lru::new)))
            }
            PolicyKind::Lru2 { protected } => {
                Box::new(self.listen(Sharded::new(self.capacity, buckets, |cap| {
                    Lru2::with_protected(cap, protected)
                })))
            }
        };
        // A hot cache smaller than the largest entry refuses just the entries too large
        // for it; they are then served from their owner each time.
        let hot_capacity = self.hot_capacity.unwrap_or(self.capacity / 8);
        let hot: Option<Box<dyn Store>> = (hot_capacity > 0).then(|| {
            let buckets = auto_buckets(hot_capacity, largest);
            Box::new(Sharded::new(hot_capacity, buckets, Lru::new)) as Box<dyn Store>
        });
        let seed = self.registry.seed() ^ store::key_hash(&self.name);
        let group = Group {
            inner: Arc::new(Inner {
                name: self.name.clone(),
                main: store,
                hot,
                loader,
                flights: SingleFlight::new(),
                loads: SingleFlight::new(),
                peers: self.registry.peer_slot(),
                clock: self.registry.clock(),
                ttl: self.ttl,
                jitter: self.jitter,
                hot_cfg: self.hot,
                doorkeeper: super::hotkeys::Doorkeeper::new(super::hotkeys::doorkeeper_slots(
                    hot_capacity,
                )),
                timeout: self.timeout,
                rng: Mutex::new(SmallRng::seed_from_u64(seed)),
                max_key: self.max_key,
                max_value,
                versions: Default::default(),
                recent_writes: Default::default(),
                counters: Counters::default(),
            }),
        };
        self.registry.insert(group.clone())?;
        Ok(group)
    }

    fn listen<P: store::Policy>(&self, store: Sharded<P>) -> Sharded<P> {
        match &self.listener {
            Some(l) => store.with_listener(l.clone()),
            None => store,
        }
    }
}

/// The most buckets (a power of two, at most 16) that still hold a few largest entries.
fn auto_buckets(capacity: u64, largest: u64) -> usize {
    let fit = (capacity / (largest * ENTRIES_PER_BUCKET)).clamp(1, MAX_BUCKETS);
    // Largest power of two not above `fit`.
    1 << (63 - fit.leading_zeros())
}
