//! Version floors: per key, the newest version written or removed, so that a fill which
//! started before a Set or Remove is refused if it lands after it.
//!
//! Memory is bounded whatever the number of keys: the keys written or removed lately
//! keep an exact floor each, and older ones spill into a fixed table of slots shared by
//! the keys that hash there. Sharing only makes the check more conservative; see
//! [`super::VERSION_FLOORS`].

use std::collections::{BTreeMap, VecDeque};

use super::{EXACT_FLOORS, VERSION_FLOORS as SLOTS};

/// The floors of one table.
pub(crate) struct Floors {
    /// Version floors by hash slot: the newest version written or removed for any key
    /// of the slot whose exact floor is no longer kept.
    slots: Box<[u64]>,
    /// Exact floors of the keys written or removed lately, by key hash, so a write to
    /// one key does not refuse a concurrent fill of another that shares its slot. The
    /// oldest spill into `slots` when there are more than `EXACT_FLOORS`.
    exact: BTreeMap<u64, u64>,
    /// Hashes in `exact`, oldest first.
    order: VecDeque<u64>,
}

impl Floors {
    pub(crate) fn new() -> Self {
        Floors {
            slots: vec![0; SLOTS].into_boxed_slice(),
            exact: BTreeMap::new(),
            order: VecDeque::new(),
        }
    }

    fn slot(hash: u64) -> usize {
        (hash as usize) & (SLOTS - 1)
    }

    /// The newest version written or removed for the key (or, once its exact floor
    /// has spilled, for any key of its slot).
    pub(crate) fn get(&self, hash: u64) -> u64 {
        let slot = self.slots[Self::slot(hash)];
        self.exact.get(&hash).map_or(slot, |&v| v.max(slot))
    }

    /// Raises the key's exact floor to `version`, spilling the oldest exact floor into
    /// its slot when there are too many.
    pub(crate) fn raise(&mut self, hash: u64, version: u64) {
        match self.exact.get_mut(&hash) {
            Some(v) => *v = (*v).max(version),
            None => {
                self.exact.insert(hash, version);
                self.order.push_back(hash);
                if self.order.len() > EXACT_FLOORS {
                    let old = self.order.pop_front().expect("over the limit");
                    if let Some(v) = self.exact.remove(&old) {
                        let slot = Self::slot(old);
                        self.slots[slot] = self.slots[slot].max(v);
                    }
                }
            }
        }
    }
}
