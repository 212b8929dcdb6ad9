//! Configuration of a group, checked once when it is built; the stores themselves are
//! made in stores.rs.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::fill::Ttl;
use super::hot::Hot;
use super::{Group, HotConfig, HotKeyConfig, Inner, Registry, stores};
use crate::error::{Error, Result};
use crate::loader::Loader;
use crate::singleflight::SingleFlight;
use crate::store::{self, Listener, Store};

/// Default capacity of a group's main cache.
pub const DEFAULT_CAPACITY: u64 = 64 << 20;
/// Default longest key, in bytes.
pub const DEFAULT_MAX_KEY: usize = 1024;
/// Default largest value, in bytes (lowered automatically for small groups).
pub const DEFAULT_MAX_VALUE: usize = 1 << 20;

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
    hot_keys: HotKeyConfig,
    timeout: Option<Duration>,
    negative_ttl: Option<Duration>,
    compression: Option<super::Compression>,
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
            hot_keys: HotKeyConfig::default(),
            timeout: None,
            negative_ttl: None,
            compression: None,
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

    /// When a key counts as hot at its owner, which then tells its askers to keep a
    /// copy (see [`HotKeyConfig`]).
    pub fn hot_keys(mut self, hot_keys: HotKeyConfig) -> Self {
        self.hot_keys = hot_keys;
        self
    }

    /// Remembers a "not found" from the loader for `ttl` on the key's owner, so a
    /// flood of gets for keys the source lacks does not reach it (off by default: a
    /// source that gains a key without a write through the cache would look empty
    /// for up to `ttl`). A write of the key ends it at once.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = Some(ttl);
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

    /// Keeps values compressed in the main and hot caches (compressed.rs): their byte
    /// budgets then count compressed bytes. Values are decompressed for every reader
    /// but peers and clients that accept the codec. With `wire_only`, values are kept
    /// as they are and compressed for peers that accept the codec.
    pub fn compress(mut self, how: super::Compression) -> Self {
        self.compression = Some(how);
        self
    }

    /// Called with every entry the main cache evicts or expires.
    pub fn on_evict(mut self, listener: Listener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Checks the configuration, builds the group and registers it under its name.
    pub fn build(self) -> Result<Group> {
        let checked = self.check()?;
        let main = stores::main(
            self.capacity,
            checked.buckets,
            self.policy,
            self.listener.clone(),
        );
        // A hot cache smaller than the largest entry refuses just the entries too large
        // for it; they are then served from their owner each time.
        let hot_capacity = self.hot_capacity.unwrap_or(self.capacity / 8);
        let hot_store = stores::hot(hot_capacity, checked.largest);
        let counters = Arc::new(super::stats::Counters::default());
        // One cache of decoded values for the main and hot caches' compressed entries.
        let decoded = (self.compression)
            .filter(|how| !how.wire_only)
            .and_then(|how| {
                let budget = how.decoded.unwrap_or(self.capacity / 16);
                super::decoded::Decoded::new(budget, checked.limits.max_value)
            })
            .map(Arc::new);
        let packed = |store: Box<dyn Store>| match self.compression {
            Some(how) if !how.wire_only => Box::new(super::compressed::Compressed::new(
                store,
                how,
                checked.limits.max_value,
                counters.clone(),
                decoded.clone(),
            )) as Box<dyn Store>,
            _ => store,
        };
        let (main, hot_store) = (packed(main), hot_store.map(packed));
        let seed = self.registry.seed() ^ store::key_hash(&self.name);
        let group = Group {
            inner: Arc::new(Inner {
                name: self.name.clone(),
                limits: checked.limits,
                main,
                hot: Hot::new(hot_store, self.hot),
                handoff: super::handoff::Handoff::new(stores::hot(
                    self.capacity / 2,
                    checked.largest,
                )),
                hot_keys: super::hotkeys::Detector::new(self.hot_keys, seed),
                negatives: self.negative_ttl.map(|ttl| {
                    let entry = store::ENTRY_OVERHEAD + self.max_key as u64;
                    super::fill::Negatives::new(stores::negatives(self.capacity, entry), ttl)
                }),
                loader: checked.loader,
                fetches: SingleFlight::new(),
                loads: SingleFlight::new(),
                ttl: Ttl {
                    default: self.ttl,
                    jitter: self.jitter,
                },
                writes: Default::default(),
                peers: self.registry.peer_slot(),
                epoch: self.registry.epoch(),
                timeout: self.timeout,
                rng: Mutex::new(SmallRng::seed_from_u64(seed)),
                wire: self.compression.filter(|how| how.wire_only),
                counters,
                tasks: self.registry.tasks(),
            }),
        };
        self.registry.insert(group.clone())?;
        Ok(group)
    }

    /// Checks every setting; returns the derived limits and store layout.
    fn check(&self) -> Result<Checked> {
        let error = |msg: String| Error::Config(format!("group {:?}: {msg}", self.name));
        let config = |msg: String| Err(error(msg));
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
        let keys = &self.hot_keys;
        if !(0.0..=1.0).contains(&keys.min_share)
            || keys.min_rate.is_nan()
            || keys.min_rate < 0.0
            || keys.top == 0
        {
            return config(format!(
                "hot-key detection needs a share in [0, 1], a rate of at least 0 and at least one key: {keys:?}"
            ));
        }
        let hot = &self.hot;
        if !(0.0..=1.0).contains(&hot.fill_ratio) {
            return config(format!(
                "hot fill ratio {} is not in [0, 1]",
                hot.fill_ratio
            ));
        }
        if hot.ttl.is_zero() || hot.fallback_ttl.is_zero() {
            return config("hot and fallback TTLs must be positive".into());
        }
        if self.timeout == Some(Duration::ZERO) {
            return config("timeout must be positive".into());
        }
        if self.negative_ttl == Some(Duration::ZERO) {
            return config("negative TTL must be positive (leave it unset for none)".into());
        }
        let Some(loader) = self.loader.clone() else {
            return config("a loader is required".into());
        };
        let max_value = self.max_value().map_err(error)?;
        // Both limits fit in `capacity` here, so this cannot overflow.
        let largest = store::ENTRY_OVERHEAD + self.max_key as u64 + max_value as u64;
        let buckets = match self.buckets {
            Some(b) => b.max(1).next_power_of_two(),
            None => stores::auto_buckets(self.capacity, largest),
        };
        if self.capacity / (buckets as u64) < largest {
            return config(format!(
                "{buckets} buckets of {} bytes cannot hold the largest entry ({largest} bytes)",
                self.capacity / buckets as u64
            ));
        }
        let limits = Limits {
            max_key: self.max_key,
            max_value,
        };
        Ok(Checked {
            limits,
            largest,
            buckets,
            loader,
        })
    }

    /// The value limit: as set if it fits beside the longest key, else the default
    /// lowered to what fits.
    fn max_value(&self) -> Result<usize, String> {
        let key_room = store::ENTRY_OVERHEAD.saturating_add(self.max_key as u64);
        let no_room = || {
            format!(
                "capacity {} cannot hold a {}-byte key",
                self.capacity, self.max_key
            )
        };
        let room = self.capacity.checked_sub(key_room).ok_or_else(no_room)?;
        match self.max_value {
            Some(v) if v as u64 > room => Err(format!(
                "capacity {} cannot hold a {v}-byte value with a {}-byte key",
                self.capacity, self.max_key
            )),
            Some(v) => Ok(v),
            None if room == 0 => Err(no_room()),
            None => Ok(DEFAULT_MAX_VALUE.min(room as usize)),
        }
    }
}

/// What checking a builder derives.
struct Checked {
    limits: Limits,
    /// Bytes of the largest entry the limits allow.
    largest: u64,
    buckets: usize,
    loader: Arc<dyn Loader>,
}

/// Limits on keys and values, checked before anything else a request does.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) max_key: usize,
    pub(super) max_value: usize,
}

impl Limits {
    pub(super) fn check_key(&self, key: &str) -> Result<()> {
        match key.len() {
            0 => Err(Error::EmptyKey),
            len if len > self.max_key => Err(Error::KeyTooLong {
                len,
                max: self.max_key,
            }),
            _ => Ok(()),
        }
    }

    pub(super) fn check_value(&self, value: &[u8]) -> Result<()> {
        match value.len() {
            len if len > self.max_value => Err(Error::ValueTooLarge {
                len,
                max: self.max_value,
            }),
            _ => Ok(()),
        }
    }
}
