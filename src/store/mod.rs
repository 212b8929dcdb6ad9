//! Local, byte-bounded stores.
//!
//! A [`Policy`] (here [`Lru`] or [`Lru2`]) is a single-threaded table that decides what
//! to keep. [`Sharded`] spreads keys over power-of-two buckets of one policy each, every
//! bucket behind its own lock, and is the [`Store`] a group uses.
//!
//! Every entry carries a version. A store remembers, per key (hashed into a small table
//! of floors), the newest version it has seen written or removed, and refuses an insert
//! older than that: a fill that started before a Set or Remove can never land after it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

mod core;
mod floors;
mod lru;
pub mod lru2;
mod sharded;
mod slab;

pub use lru::Lru;
pub use lru2::Lru2;
pub use sharded::Sharded;

/// Fixed bytes charged per entry on top of key and value. It approximates the slab node
/// (96 bytes with its list links), which is most of the per-entry cost; the index slot
/// (about 5 bytes) and the allocator's headers for the key and value buffers are not
/// counted. Capacity bounds this accounted size, not the process's resident memory.
pub const ENTRY_OVERHEAD: u64 = 96;

/// Version floors per bucket (a power of two). A bucket keeps the exact floor (newest
/// version written or removed) of its last [`EXACT_FLOORS`] keys written or removed; older
/// ones spill into slot `key_hash(key) % VERSION_FLOORS`, shared by the keys of the slot.
/// Sharing only makes the stale-insert check more conservative, never less: after a
/// spill, a write to one key can make a concurrent fill of another key in its slot go
/// uncached (it reloads later).
pub const VERSION_FLOORS: usize = 1024;

/// Exact version floors kept per bucket; see [`VERSION_FLOORS`].
pub const EXACT_FLOORS: usize = 256;

/// Bytes an entry with this key and value counts against a store's capacity.
pub fn entry_charge(key: &str, value: &[u8]) -> u64 {
    slab::charge(key.len(), value.len())
}

/// The 64-bit hash every store uses for a key (xxh3 with a store-private seed, so it is
/// independent of the ring's placement hash).
pub fn key_hash(key: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key.as_bytes(), 0x7065_6572_6361_6368)
}

/// A value found in a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The cached bytes.
    pub value: Bytes,
    /// The entry's version.
    pub version: u64,
    expires: u64,
}

impl Hit {
    /// When the entry expires, as time since the epoch ([`crate::time::Epoch`]); `None`
    /// if never.
    pub fn expires_at(&self) -> Option<Duration> {
        (self.expires != core::NEVER).then(|| Duration::from_nanos(self.expires))
    }
}

/// A value to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The bytes to cache.
    pub value: Bytes,
    /// Inserts older than the newest version seen for the key are refused.
    pub version: u64,
    /// Absolute expiry (time since the epoch); `None` never expires.
    pub expires_at: Option<Duration>,
}

impl Entry {
    /// An entry at `version` that never expires.
    pub fn new(value: impl Into<Bytes>, version: u64) -> Self {
        Entry {
            value: value.into(),
            version,
            expires_at: None,
        }
    }
}

/// Outcome of [`Policy::peek`], a lookup through a shared reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// Found, live, and the hit needed no list change.
    Hit(Hit),
    /// Not present.
    Miss,
    /// Present, but the hit must move or drop the entry: retry with [`Policy::get`].
    NeedsWrite,
}

/// Why an insert was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The entry alone is larger than the bucket it would live in.
    #[error("entry larger than the store's bucket capacity")]
    TooLarge,
    /// A newer version of the key was written or removed already.
    #[error("a newer version of the key was seen")]
    Stale,
}

/// Why an entry left the store, as told to the eviction listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Pushed out to make room.
    Evicted,
    /// Its time to live ran out.
    Expired,
}

/// An entry that left the store, as collected for the listener.
#[derive(Debug)]
pub struct Evicted {
    /// The entry's key.
    pub key: Box<str>,
    /// The entry's value.
    pub value: Bytes,
    /// Why it left.
    pub reason: Reason,
}

/// Called with each evicted or expired entry, after the bucket lock is released.
pub type Listener = Arc<dyn Fn(&Evicted) + Send + Sync>;

/// Counters and gauges of a store.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Lookups that found a live entry.
    pub hits: u64,
    /// Lookups that found nothing or an expired entry. A group's miss looks twice (once
    /// before and once inside its flight), so store misses exceed the group's.
    pub misses: u64,
    /// Accepted inserts (new keys and replacements).
    pub inserts: u64,
    /// Entries pushed out for room.
    pub evictions: u64,
    /// Entries dropped because their TTL ran out (on read or by the sweeper).
    pub expirations: u64,
    /// Inserts refused because a newer version was seen.
    pub stale_rejections: u64,
    /// Entries held now.
    pub items: u64,
    /// Bytes held now (keys + values + per-entry overhead).
    pub bytes: u64,
    /// Configured capacity in bytes.
    pub capacity: u64,
}

/// A single-threaded replacement policy over one bucket. `now` is nanoseconds since the
/// epoch and `hash` is [`key_hash`] of `key`.
pub trait Policy: Send + Sync + 'static {
    /// Whether most hits need no list change, so that trying [`Policy::peek`] under a
    /// shared lock first pays off. When false, every lookup takes the exclusive lock.
    const SHARED_HITS: bool;
    /// Looks a key up through `&self`, so many readers may share the bucket: answers
    /// misses and the hits that need no list change, and says when `get` is needed.
    fn peek(&self, hash: u64, key: &str, now: u64) -> Peek;
    /// Finds a live entry and records the access.
    fn get(
        &mut self,
        hash: u64,
        key: &str,
        now: u64,
        out: Option<&mut Vec<Evicted>>,
    ) -> Option<Hit>;
    /// Inserts or replaces an entry, evicting as needed.
    fn insert(
        &mut self,
        hash: u64,
        key: &str,
        entry: Entry,
        out: Option<&mut Vec<Evicted>>,
    ) -> Result<(), Rejected>;
    /// Raises the key's version floor and drops an entry older than `version`.
    fn remove(&mut self, hash: u64, key: &str, version: u64) -> bool;
    /// The newest version seen for the key (or a colliding one).
    fn floor(&self, hash: u64) -> u64;
    /// Drops expired entries among the next `budget` slots.
    fn sweep(&mut self, now: u64, budget: usize, out: Option<&mut Vec<Evicted>>) -> usize;
    /// Drops every entry whose key `keep` refuses.
    fn retain(&mut self, keep: &mut dyn FnMut(&str) -> bool) -> usize;
    /// The live entries whose key `pick` accepts, most recently used first; taken out
    /// of the bucket when `take`.
    fn collect(
        &mut self,
        pick: &mut dyn FnMut(&str) -> bool,
        now: u64,
        take: bool,
    ) -> Vec<(Box<str>, Hit)>;
    /// Adds this bucket's counters into `stats`.
    fn add_stats(&self, stats: &mut Stats);
}

/// Implements [`Policy`] for a type with a `core: Core` and a `place: impl Placement`.
macro_rules! delegate_policy {
    ($ty:ty, shared_hits: $shared:expr) => {
        impl $crate::store::Policy for $ty {
            const SHARED_HITS: bool = $shared;

            #[inline]
            fn peek(&self, hash: u64, key: &str, now: u64) -> $crate::store::Peek {
                self.core.peek(&self.place, hash, key, now)
            }

            fn get(
                &mut self,
                hash: u64,
                key: &str,
                now: u64,
                out: Option<&mut Vec<$crate::store::Evicted>>,
            ) -> Option<$crate::store::Hit> {
                self.core.get(&mut self.place, hash, key, now, out)
            }

            fn insert(
                &mut self,
                hash: u64,
                key: &str,
                entry: $crate::store::Entry,
                out: Option<&mut Vec<$crate::store::Evicted>>,
            ) -> Result<(), $crate::store::Rejected> {
                let expires = $crate::store::nanos(entry.expires_at);
                self.core.insert(
                    &mut self.place,
                    hash,
                    key,
                    entry.value,
                    entry.version,
                    expires,
                    out,
                )
            }

            fn remove(&mut self, hash: u64, key: &str, version: u64) -> bool {
                self.core.remove(hash, key, version)
            }

            fn floor(&self, hash: u64) -> u64 {
                self.core.floor(hash)
            }

            fn sweep(
                &mut self,
                now: u64,
                budget: usize,
                out: Option<&mut Vec<$crate::store::Evicted>>,
            ) -> usize {
                self.core.sweep(now, budget, out)
            }

            fn retain(&mut self, keep: &mut dyn FnMut(&str) -> bool) -> usize {
                self.core.retain(keep)
            }

            fn collect(
                &mut self,
                pick: &mut dyn FnMut(&str) -> bool,
                now: u64,
                take: bool,
            ) -> Vec<(Box<str>, $crate::store::Hit)> {
                self.core.collect(pick, now, take)
            }

            fn add_stats(&self, stats: &mut $crate::store::Stats) {
                self.core.add_stats(stats)
            }
        }
    };
}
pub(crate) use delegate_policy;

/// A point in time as nanoseconds since the epoch; `None` is never.
pub(crate) fn nanos(at: Option<Duration>) -> u64 {
    match at {
        Some(at) => u64::try_from(at.as_nanos()).unwrap_or(core::NEVER - 1),
        None => core::NEVER,
    }
}

/// A thread-safe store, as a group uses it. `now` is time since the epoch.
pub trait Store: Send + Sync + 'static {
    /// Finds a live entry.
    fn get(&self, key: &str, now: Duration) -> Option<Hit>;
    /// Finds a live entry for a reader that decodes the codecs of `accept`: its bytes
    /// as the store holds them when that is in one of them (compressed by a store that
    /// compresses, src/group/compressed.rs), else decompressed; in the returned codec.
    fn get_as(
        &self,
        key: &str,
        now: Duration,
        accept: &[crate::codec::Codec],
    ) -> Option<(Hit, crate::codec::Codec)> {
        let _ = accept;
        self.get(key, now)
            .map(|hit| (hit, crate::codec::Codec::Identity))
    }
    /// Inserts unless a newer version of the key was seen.
    fn insert(&self, key: &str, entry: Entry) -> Result<(), Rejected>;
    /// [`Self::insert`] of a value at hand compressed too, `packed` in its codec (as a
    /// peer sent it, already decoded into `entry`): a store that keeps values
    /// compressed in that codec keeps those bytes instead of compressing again.
    fn insert_packed(
        &self,
        key: &str,
        entry: Entry,
        packed: Option<(crate::codec::Codec, &Bytes)>,
    ) -> Result<(), Rejected> {
        let _ = packed;
        self.insert(key, entry)
    }
    /// Raises the key's version floor to `version` and drops an older entry.
    fn remove(&self, key: &str, version: u64) -> bool;
    /// The newest version seen for the key; a fill stamps its entry with this.
    fn floor(&self, key: &str) -> u64;
    /// Drops the key's entry whatever its version, raising its floor above everything
    /// seen and to at least `version`, so a fill already under way is refused too.
    fn purge(&self, key: &str, version: u64) -> bool {
        self.remove(key, self.floor(key).saturating_add(1).max(version))
    }
    /// Drops expired entries, a bounded number of slots per bucket per call.
    fn sweep(&self, now: Duration) -> usize;
    /// Drops every entry whose key `keep` refuses (a membership change moved it away).
    fn retain(&self, keep: &dyn Fn(&str) -> bool) -> usize;
    /// The live entries whose key `pick` accepts, most recently used first across
    /// buckets (each bucket's in turn), each taken out of the store when `take` (a
    /// handoff: the entries go elsewhere; not counted as evictions).
    fn collect(
        &self,
        pick: &dyn Fn(&str) -> bool,
        now: Duration,
        take: bool,
    ) -> Vec<(Box<str>, Hit)>;
    /// The largest entry charge the store can hold.
    fn max_charge(&self) -> u64;
    /// Counters and gauges summed over buckets.
    fn stats(&self) -> Stats;
    /// Entries held.
    fn len(&self) -> usize {
        self.stats().items as usize
    }
    /// True if the store holds nothing.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes held.
    fn bytes(&self) -> u64 {
        self.stats().bytes
    }
}
