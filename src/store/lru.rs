//! Byte-bounded least-recently-used policy.

use super::core::{Core, Placement};
use super::delegate_policy;
use super::slab::Slab;

/// Least recently used: a hit moves the entry to the front (unless it is already in the
/// front quarter), eviction takes the back.
pub struct Lru {
    core: Core,
    place: Recency,
}

struct Recency;

impl Lru {
    /// An empty LRU holding at most `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        Lru {
            core: Core::new(capacity),
            place: Recency,
        }
    }
}

impl Placement for Recency {
    fn read_only_hit(&self, slab: &Slab, idx: u32) -> bool {
        slab.near_front(idx)
    }

    fn on_hit(&mut self, slab: &mut Slab, idx: u32) {
        if !slab.near_front(idx) {
            slab.move_to_front(0, idx);
        }
    }

    fn on_insert(&mut self, slab: &mut Slab, idx: u32) {
        slab.push_front(0, idx);
    }

    fn victim(&self, slab: &Slab, keep: u32) -> Option<u32> {
        slab.tail_except(0, keep)
    }
}

// Only hits in the front quarter are read-only; on uniform traffic most are not, and a
// failed peek costs a second lookup (get-hit bench: 278 ns per hit with the shared-lock
// attempt, 227 ns without it).
delegate_policy!(Lru, shared_hits: false);
