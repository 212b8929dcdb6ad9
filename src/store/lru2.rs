//! Two-level LRU (segmented LRU): resists one-off scans that flush a plain LRU.
//!
//! New keys enter level 1 (probation). A hit on a level-1 entry promotes it to level 2
//! (protected); a hit on a level-2 entry moves it to the front unless it is already in
//! level 2's front quarter. Level 2 is capped at a fraction of capacity; its overflow is demoted to
//! the front of level 1, so it gets one more chance. Eviction takes level 1's back first.
//! A scan touches each key once, so it only churns level 1 and the hot set survives.

use super::core::{Core, Placement};
use super::delegate_policy;

const PROBATION: usize = 0;
const PROTECTED: usize = 1;

/// Default share of capacity for level 2. Chosen on the hit-ratio bench
/// (`cargo bench --bench hit_ratio`, Zipf 0.99 and Zipf with scans at 1/5/10% of the key
/// space): 0.7 and 0.8 trailed 0.9 by 0.4–1.5 points, 0.95 gained nothing over 0.9.
pub const DEFAULT_PROTECTED: f64 = 0.9;

/// Two-level LRU; see the module docs.
pub struct Lru2 {
    core: Core,
    place: TwoLevels,
}

struct TwoLevels {
    protected_cap: u64,
}

impl Lru2 {
    /// An empty two-level LRU of `capacity` bytes with the default level-2 share.
    pub fn new(capacity: u64) -> Self {
        Self::with_protected(capacity, DEFAULT_PROTECTED)
    }

    /// An empty two-level LRU whose level 2 may hold `protected` (0..=1) of `capacity`.
    pub fn with_protected(capacity: u64, protected: f64) -> Self {
        let protected = protected.clamp(0.0, 1.0);
        Lru2 {
            core: Core::new(capacity),
            place: TwoLevels {
                protected_cap: (capacity as f64 * protected) as u64,
            },
        }
    }
}

impl TwoLevels {
    /// Demotes level 2's least recent entries to level 1 until level 2 fits its share.
    fn fit_protected(&self, core: &mut Core) {
        while core.list(PROTECTED).bytes > self.protected_cap && core.list(PROTECTED).len > 1 {
            let tail = core.list(PROTECTED).tail;
            core.unlink(tail);
            core.push_front(PROBATION, tail);
        }
    }
}

impl Placement for TwoLevels {
    fn on_hit(&mut self, core: &mut Core, idx: u32) {
        if core.list_of(idx) == PROTECTED && core.near_front(idx) {
            return;
        }
        core.move_to_front(PROTECTED, idx);
        self.fit_protected(core);
    }

    fn on_update(&mut self, core: &mut Core, _idx: u32) {
        // A bigger value may have pushed level 2 over its share.
        self.fit_protected(core);
    }

    fn on_insert(&mut self, core: &mut Core, idx: u32) {
        core.push_front(PROBATION, idx);
    }

    fn victim(&self, core: &Core, keep: u32) -> Option<u32> {
        core.tail_except(PROBATION, keep)
            .or_else(|| core.tail_except(PROTECTED, keep))
    }
}

delegate_policy!(Lru2);
