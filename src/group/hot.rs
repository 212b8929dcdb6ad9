//! Copies of keys other members own: the hot cache, and which fetched values deserve
//! a copy.
//!
//! groupcache keeps a random tenth of the values it fetches. That needs about ten
//! fetches before a hot key is kept, and spends room on keys fetched once. We use a
//! doorkeeper instead (as in TinyLFU): a direct-mapped table of the keys fetched
//! recently; a key found there on its next fetch is kept. A hot key is therefore kept on
//! its second fetch, while a key fetched once only costs a slot in the table. On Zipf
//! traffic this answers 1.06x to 1.46x as many gets from the hot cache as the random
//! tenth (reports/hot-rule.md). A sampled share can be kept as well (`fill_ratio`).
//!
//! The hot cache also keeps values loaded here while their owner was unreachable, for
//! the fallback TTL only.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;
use rand::rngs::SmallRng;

use crate::peer::Fetched;
use crate::store::{self, Entry, Hit, Store};

/// How a group keeps copies of keys it does not own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HotConfig {
    /// Longest a copy fetched from the owner is kept: the staleness bound when an
    /// invalidation is lost.
    pub ttl: Duration,
    /// Longest a value loaded here while its owner was unreachable (or while this node
    /// disagreed about ownership) is kept.
    pub fallback_ttl: Duration,
    /// Longest a value loaded here while its owner is suspected of being unreachable is
    /// kept; `None`: the hot TTL, so the staleness bound holds under partitions too.
    /// Longer keeps a dead owner's keys from being loaded again every hot TTL (with a
    /// static membership, for as long as it stays dead) at a price: under a partition,
    /// a write the owner acknowledged without reaching this node is missed that long.
    /// The copies of a member's keys are dropped when it answers again.
    pub suspected_ttl: Option<Duration>,
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
            suspected_ttl: None,
            fill_ratio: 0.0,
            second_fetch: true,
        }
    }
}

/// A group's hot cache: the store (none when disabled), its rules and its doorkeeper.
pub(super) struct Hot {
    store: Option<Box<dyn Store>>,
    cfg: HotConfig,
    doorkeeper: Doorkeeper,
}

impl Hot {
    /// A hot cache over `store` (none: copies are never kept), its doorkeeper sized to
    /// the store's capacity.
    pub(super) fn new(store: Option<Box<dyn Store>>, cfg: HotConfig) -> Self {
        let capacity = store.as_ref().map_or(0, |s| s.stats().capacity);
        Hot {
            store,
            cfg,
            doorkeeper: Doorkeeper::new(doorkeeper_slots(capacity)),
        }
    }

    /// The store, when copies are kept.
    pub(super) fn store(&self) -> Option<&dyn Store> {
        self.store.as_deref()
    }

    /// A live copy of `key`.
    pub(super) fn get(&self, key: &str, now: Duration) -> Option<Hit> {
        self.store.as_ref()?.get(key, now)
    }

    /// The newest version seen for `key`, read before asking its owner: an
    /// invalidation from then on refuses the copy that comes back.
    pub(super) fn floor(&self, key: &str) -> Option<u64> {
        self.store.as_ref().map(|s| s.floor(key))
    }

    /// How long a value loaded here for a key owned elsewhere may live: the fallback
    /// TTL, or, while the owner is `suspected` of being unreachable, the suspected TTL
    /// (by default the hot TTL, the staleness bound of copies), so a key of a dead owner
    /// is loaded about once per hot TTL instead of once per fallback TTL; when the
    /// owner answers again the copies of its keys are dropped. Never past the group's
    /// `ttl`.
    pub(super) fn fallback_ttl(&self, ttl: Option<Duration>, suspected: bool) -> Duration {
        let base = match suspected {
            true => (self.cfg.fallback_ttl).max(self.cfg.suspected_ttl.unwrap_or(self.cfg.ttl)),
            false => self.cfg.fallback_ttl,
        };
        ttl.map_or(base, |t| t.min(base))
    }

    /// Keeps a value fetched from its owner, if the owner flagged it hot, it was fetched
    /// again soon (see the doorkeeper) or is sampled. `floor` is [`Hot::floor`] from before the fetch.
    pub(super) fn keep(
        &self,
        key: &str,
        fetched: &Fetched,
        floor: u64,
        now: Duration,
        rng: &Mutex<SmallRng>,
    ) {
        let Some(hot) = &self.store else { return };
        if super::writes::check_version(fetched.version).is_err() {
            return;
        }
        let cfg = &self.cfg;
        // The owner says the key is hot: keep it now, not on a later fetch.
        let again =
            fetched.hot || (cfg.second_fetch && self.doorkeeper.seen_again(store::key_hash(key)));
        let sampled = cfg.fill_ratio >= 1.0
            || (cfg.fill_ratio > 0.0 && rng.lock().random_bool(cfg.fill_ratio));
        if !(again || sampled) {
            return;
        }
        let ttl = fetched.expires_in.map_or(cfg.ttl, |left| left.min(cfg.ttl));
        let entry = Entry {
            value: fetched.value.clone(),
            // The owner's version, but never below what this node had seen when it
            // asked, so an invalidation that overtook the answer still wins.
            version: fetched.version.max(floor),
            expires_at: Some(now.saturating_add(ttl)),
        };
        let packed = (fetched.packed.as_ref()).map(|(codec, bytes)| (*codec, bytes));
        let _ = hot.insert_packed(key, entry, packed);
    }

    /// Drops the copy of `key`, whatever its version, and raises the key's floor to at
    /// least `version`.
    pub(super) fn drop_copy(&self, key: &str, version: u64) {
        if let Some(hot) = &self.store {
            hot.purge(key, version);
        }
    }

    /// Drops the copy of `key` at `version`: it moved to the main cache.
    pub(super) fn forget(&self, key: &str, version: u64) {
        if let Some(hot) = &self.store {
            hot.remove(key, version.saturating_add(1));
        }
    }

    /// Drops expired copies; returns how many.
    pub(super) fn sweep(&self, now: Duration) -> usize {
        self.store.as_ref().map_or(0, |s| s.sweep(now))
    }

    /// The store's counters (zero when disabled).
    pub(super) fn stats(&self) -> store::Stats {
        self.store.as_ref().map(|s| s.stats()).unwrap_or_default()
    }
}

/// Bytes of hot-cache capacity per doorkeeper slot: the table remembers about as many
/// keys as a hot cache of small entries holds, for 8 bytes a slot (3% of the capacity).
const BYTES_PER_SLOT: u64 = 256;

/// Slots of the doorkeeper for a hot cache of `capacity` bytes: a power of two from
/// 1,024 to 1,048,576.
pub fn doorkeeper_slots(capacity: u64) -> usize {
    let slots = (capacity / BYTES_PER_SLOT).clamp(1 << 10, 1 << 20);
    slots.next_power_of_two() as usize
}

/// Recently fetched keys, by hash; a slot holds the last key that mapped to it.
pub struct Doorkeeper {
    slots: Box<[AtomicU64]>,
    shift: u32,
}

impl Doorkeeper {
    /// A table of `slots` (rounded up to a power of two) slots.
    pub fn new(slots: usize) -> Self {
        let slots = slots.max(2).next_power_of_two();
        Doorkeeper {
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            shift: 64 - slots.trailing_zeros(),
        }
    }

    /// Records a fetch of the key hashing to `hash`; true if that key was the last one
    /// recorded in its slot, i.e. fetched before and not displaced since.
    pub fn seen_again(&self, hash: u64) -> bool {
        // 0 marks an empty slot, so no key's tag may be 0.
        let tag = hash.max(1);
        let slot = &self.slots[(hash >> self.shift) as usize];
        slot.swap(tag, Relaxed) == tag
    }
}

#[cfg(test)]
mod tests {
    use super::Doorkeeper;

    #[test]
    fn a_key_passes_on_its_second_fetch() {
        let d = Doorkeeper::new(16);
        assert!(!d.seen_again(0xdead_beef_0000_0001));
        assert!(d.seen_again(0xdead_beef_0000_0001));
        assert!(d.seen_again(0xdead_beef_0000_0001));
    }

    #[test]
    fn a_key_displaced_from_its_slot_starts_over() {
        let d = Doorkeeper::new(16);
        // Same top bits, so the same slot; different tags.
        let (a, b) = (0xf000_0000_0000_0001, 0xf000_0000_0000_0002);
        assert!(!d.seen_again(a));
        assert!(!d.seen_again(b));
        assert!(!d.seen_again(a), "b displaced a");
        assert!(d.seen_again(a));
    }

    #[test]
    fn a_zero_hash_is_not_mistaken_for_an_empty_slot() {
        let d = Doorkeeper::new(4);
        assert!(!d.seen_again(0));
        assert!(d.seen_again(0));
    }
}
