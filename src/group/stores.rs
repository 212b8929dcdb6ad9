//! Making a group's stores from its checked configuration: the policy, the number of
//! lock buckets, the eviction listener, and the hot cache.

use super::PolicyKind;
use crate::store::{Listener, Lru, Lru2, Sharded, Store};

/// Most buckets a store is split into by default.
const MAX_BUCKETS: u64 = 16;
/// A bucket holds at least this many largest-size entries, or the group uses fewer.
const ENTRIES_PER_BUCKET: u64 = 4;

/// The main cache: `capacity` bytes over `buckets` buckets of `policy`.
pub(super) fn main(
    capacity: u64,
    buckets: usize,
    policy: PolicyKind,
    listener: Option<Listener>,
) -> Box<dyn Store> {
    fn listen<P: crate::store::Policy>(s: Sharded<P>, l: Option<Listener>) -> Sharded<P> {
        match l {
            Some(l) => s.with_listener(l),
            None => s,
        }
    }
    match policy {
        PolicyKind::Lru => Box::new(listen(Sharded::new(capacity, buckets, Lru::new), listener)),
        PolicyKind::Lru2 { protected } => {
            let lru2 = |cap| Lru2::with_protected(cap, protected);
            Box::new(listen(Sharded::new(capacity, buckets, lru2), listener))
        }
    }
}

/// The hot cache or the handoff store: plain LRU, or none when `capacity` is 0.
pub(super) fn hot(capacity: u64, largest: u64) -> Option<Box<dyn Store>> {
    (capacity > 0).then(|| {
        let buckets = auto_buckets(capacity, largest);
        Box::new(Sharded::new(capacity, buckets, Lru::new)) as Box<dyn Store>
    })
}

/// The negative cache: keys the loader lacks, an LRU of a sixteenth of the group's
/// `capacity` (at least 64 entries of `largest`, the longest key's entry).
pub(super) fn negatives(capacity: u64, largest: u64) -> Box<dyn Store> {
    let capacity = (capacity / 16).max(largest * 64);
    let buckets = auto_buckets(capacity, largest);
    Box::new(Sharded::new(capacity, buckets, Lru::new))
}

/// The most buckets (a power of two, at most 16) that still hold a few largest entries.
pub(super) fn auto_buckets(capacity: u64, largest: u64) -> usize {
    let fit = (capacity / (largest * ENTRIES_PER_BUCKET)).clamp(1, MAX_BUCKETS);
    // Largest power of two not above `fit`.
    1 << (63 - fit.leading_zeros())
}
