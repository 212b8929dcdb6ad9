//! Decoded values of the compressed entries read most, so a hot key kept compressed is
//! not decompressed again on every hit by a reader that does not accept its codec.
//!
//! An entry is the stored frame it was decoded from and the value. It answers a read
//! only if the store returned that very frame: the same allocation, which the entry
//! holds alive, so no other frame can be at its address. A key written again, or
//! loaded again at the same version with other bytes, is a new frame and is decoded
//! anew; nothing needs invalidating for correctness (writes drop the entry only to
//! free its memory early).
//!
//! Eviction is quick_cache's CLOCK-Pro, which keeps a stream of keys read once from
//! pushing out the hot ones, under a byte budget that counts both the value and the
//! frame (kept alive here after the store may have evicted it). Its hashing is seeded
//! the same on every run: the simulator replays runs.

use bytes::Bytes;
use quick_cache::sync::{Cache, DefaultLifecycle};
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

use crate::store::ENTRY_OVERHEAD;

/// Most independent parts of the cache (each locked on its own).
const MAX_SHARDS: u64 = 16;

/// The byte budget's weights: the key, the frame and the value, with the overhead of
/// an entry.
#[derive(Clone, Copy)]
struct Weight;

impl quick_cache::Weighter<Box<str>, (Bytes, Bytes)> for Weight {
    fn weight(&self, key: &Box<str>, (frame, value): &(Bytes, Bytes)) -> u64 {
        (key.len() + frame.len() + value.len()) as u64 + ENTRY_OVERHEAD
    }
}

/// Decoded values of compressed frames, within a byte budget.
pub(super) struct Decoded {
    cache: Cache<Box<str>, (Bytes, Bytes), Weight, Xxh3DefaultBuilder>,
}

impl Decoded {
    /// A cache of at most `capacity` bytes for values up to `largest` bytes; `None`
    /// for 0 (off).
    pub(super) fn new(capacity: u64, largest: usize) -> Option<Self> {
        if capacity == 0 {
            return None;
        }
        // Each part has its share of the budget and refuses an entry larger than that:
        // as many parts as leave room for four of the largest values (and their
        // frames) in each, at least one.
        let fit = capacity / (8 * (largest as u64).max(1));
        let shards = 1u64 << fit.clamp(1, MAX_SHARDS).ilog2();
        let options = quick_cache::OptionsBuilder::new()
            .shards(shards as usize)
            // A guess for the table's first size only; values of 4 KiB.
            .estimated_items_capacity(usize::try_from(capacity / 4096).unwrap_or(1).max(16))
            .weight_capacity(capacity)
            .build()
            .expect("the options are valid");
        let cache = Cache::with_options(
            options,
            Weight,
            Xxh3DefaultBuilder::new(),
            DefaultLifecycle::default(),
        );
        Some(Decoded { cache })
    }

    /// The value `frame`, the stored bytes of `key`, decodes to, if this cache decoded
    /// that very frame.
    pub(super) fn get(&self, key: &str, frame: &Bytes) -> Option<Bytes> {
        let (kept, value) = self.cache.get(key)?;
        same(&kept, frame).then_some(value)
    }

    /// Remembers that `frame`, stored for `key`, decodes to `value`.
    pub(super) fn insert(&self, key: &str, frame: Bytes, value: Bytes) {
        self.cache.insert(key.into(), (frame, value));
    }

    /// Drops what is kept for `key` (its entry was written or removed).
    pub(super) fn forget(&self, key: &str) {
        self.cache.remove(key);
    }

    /// Bytes held (the budget's weights).
    #[cfg(test)]
    pub(super) fn weight(&self) -> u64 {
        self.cache.weight()
    }
}

/// Whether `a` and `b` are views of the same bytes of one allocation.
fn same(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_frame_is_answered() {
        let d = Decoded::new(1 << 20, 1 << 10).expect("on");
        let frame = Bytes::from(vec![1u8, 2, 3]);
        d.insert("k", frame.clone(), Bytes::from_static(b"value"));
        assert_eq!(d.get("k", &frame).as_deref(), Some(&b"value"[..]));
        // Equal bytes in another allocation: a frame this cache did not decode.
        let equal = Bytes::from(vec![1u8, 2, 3]);
        assert_eq!(d.get("k", &equal), None);
        assert_eq!(d.get("k", &frame.slice(1..)), None);
        assert_eq!(d.get("other", &frame), None);
        d.forget("k");
        assert_eq!(d.get("k", &frame), None);
    }

    #[test]
    fn it_keeps_within_its_budget_and_zero_is_off() {
        assert!(Decoded::new(0, 1 << 20).is_none());
        let d = Decoded::new(64 << 10, 4 << 10).expect("on");
        for i in 0..100 {
            let frame = Bytes::from(vec![0u8; 1000]);
            d.insert(&format!("k{i}"), frame, Bytes::from(vec![1u8; 3000]));
        }
        assert!(d.weight() <= 64 << 10, "{}", d.weight());
        assert!(d.weight() > 0);
    }

    /// A value as large as the group allows is kept, even in a budget of a few of
    /// them (one part then, not a share too small for it).
    #[test]
    fn the_largest_value_fits() {
        let d = Decoded::new(4 << 20, 1 << 20).expect("on");
        let frame = Bytes::from(vec![0u8; 100 << 10]);
        d.insert("big", frame.clone(), Bytes::from(vec![1u8; 1 << 20]));
        assert!(d.get("big", &frame).is_some());
    }
}
