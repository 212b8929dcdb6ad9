//! The table both policies share: a hash index into the [slab](super::slab), version
//! floors, TTL and counters. Every lookup, insert and removal goes through here.
//!
//! A policy ([`super::Lru`], [`super::Lru2`]) decides only where an entry goes on a hit
//! and on insert, and which entry to evict, and for that sees only the slab. Everything
//! else is here, once.
//!
//! Most hits need no list change at all ([`Placement::read_only_hit`]): those are served
//! by [`Core::peek`] through `&self`, so a bucket can answer them under a shared lock,
//! touching only the entry's reference bit and an atomic counter.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use hashbrown::HashTable;

use super::floors::Floors;
use super::slab::{Node, Slab, charge};
use super::{Evicted, Hit, Peek, Reason, Rejected, Stats};

/// `expires` of an entry that never expires.
pub(crate) const NEVER: u64 = u64::MAX;

#[derive(Default)]
struct Counters {
    hits: u64,
    misses: u64,
    inserts: u64,
    evictions: u64,
    expirations: u64,
    stale_rejections: u64,
    /// Hits and misses counted by `peek`, under a shared lock.
    shared_hits: AtomicU64,
    shared_misses: AtomicU64,
}

/// What a policy decides; the table does the rest.
pub(crate) trait Placement {
    /// True if a hit on `idx` needs no list change; `Core::peek` then sets its reference
    /// bit and answers without exclusive access.
    fn read_only_hit(&self, slab: &Slab, idx: u32) -> bool;
    /// Entry `idx` (in list `slab.list_of(idx)`) was read.
    fn on_hit(&mut self, slab: &mut Slab, idx: u32);
    /// Entry `idx` got a new value and was moved to the front of its own list.
    fn on_update(&mut self, _slab: &mut Slab, _idx: u32) {}
    /// Entry `idx` is new and on no list yet.
    fn on_insert(&mut self, slab: &mut Slab, idx: u32);
    /// The entry to evict next, never `keep` unless nothing else is left.
    fn victim(&self, slab: &Slab, keep: u32) -> Option<u32>;
}

/// The shared table. Not thread safe: [`super::Sharded`] puts each one behind a lock.
pub(crate) struct Core {
    slab: Slab,
    index: HashTable<u32>,
    capacity: u64,
    floors: Floors,
    counters: Counters,
    /// The slab slot where the next sweep starts.
    cursor: usize,
}

impl Core {
    pub(crate) fn new(capacity: u64) -> Self {
        Core {
            slab: Slab::new(),
            index: HashTable::new(),
            capacity,
            floors: Floors::new(),
            counters: Counters::default(),
            cursor: 0,
        }
    }

    #[inline]
    fn find(&self, hash: u64, key: &str) -> Option<u32> {
        self.index
            .find(hash, |&i| &*self.slab.node(i).key == key)
            .copied()
    }

    /// The newest version written or removed for the key (or, once its exact floor
    /// has spilled, for any key of its slot).
    pub(crate) fn floor(&self, hash: u64) -> u64 {
        self.floors.get(hash)
    }

    /// Looks `key` up without exclusive access. Answers a miss, or a hit the policy
    /// says needs no list change; anything else is `NeedsWrite`.
    #[inline]
    pub(crate) fn peek(&self, placement: &impl Placement, hash: u64, key: &str, now: u64) -> Peek {
        let Some(idx) = self.find(hash, key) else {
            self.counters.shared_misses.fetch_add(1, Relaxed);
            return Peek::Miss;
        };
        let n = self.slab.node(idx);
        if n.expires <= now || !placement.read_only_hit(&self.slab, idx) {
            return Peek::NeedsWrite;
        }
        n.mark_referenced();
        self.counters.shared_hits.fetch_add(1, Relaxed);
        Peek::Hit(n.hit())
    }

    /// Removes entry `idx` entirely and returns its key and value.
    fn take(&mut self, idx: u32) -> (Box<str>, Bytes) {
        let hash = self.slab.node(idx).hash;
        self.index
            .find_entry(hash, |&i| i == idx)
            .expect("every listed entry is indexed")
            .remove();
        self.slab.take(idx)
    }

    /// Drops entry `idx` for `reason`, counts it, and hands it to `out` if collecting.
    fn discard(&mut self, idx: u32, reason: Reason, out: Option<&mut Vec<Evicted>>) {
        let (key, value) = self.take(idx);
        match reason {
            Reason::Evicted => self.counters.evictions += 1,
            Reason::Expired => self.counters.expirations += 1,
        }
        if let Some(out) = out {
            out.push(Evicted { key, value, reason });
        }
    }

    fn expired(&self, idx: u32, now: u64) -> bool {
        self.slab.node(idx).expires <= now
    }

    /// Looks `key` up, dropping it if expired, and lets `placement` see the hit.
    // `get` and `insert` have one caller per policy, its `Policy` impl: inlining them
    // there keeps a hit one call deep whichever codegen unit each file lands in.
    #[inline]
    pub(crate) fn get(
        &mut self,
        placement: &mut impl Placement,
        hash: u64,
        key: &str,
        now: u64,
        out: Option<&mut Vec<Evicted>>,
    ) -> Option<Hit> {
        let Some(idx) = self.find(hash, key) else {
            self.counters.misses += 1;
            return None;
        };
        if self.expired(idx, now) {
            self.discard(idx, Reason::Expired, out);
            self.counters.misses += 1;
            return None;
        }
        self.counters.hits += 1;
        placement.on_hit(&mut self.slab, idx);
        Some(self.slab.node(idx).hit())
    }

    /// Inserts or replaces `key` unless a newer version was seen for it, then evicts
    /// until the table fits its capacity again.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn insert(
        &mut self,
        placement: &mut impl Placement,
        hash: u64,
        key: &str,
        value: Bytes,
        version: u64,
        expires: u64,
        mut out: Option<&mut Vec<Evicted>>,
    ) -> Result<(), Rejected> {
        if charge(key.len(), value.len()) > self.capacity {
            return Err(Rejected::TooLarge);
        }
        let floor = self.floors.get(hash);
        if version < floor {
            self.counters.stale_rejections += 1;
            // The newer write may have been to another key sharing the slot (once its
            // exact floor spilled). Either way, an entry of this key older than
            // `version` is superseded: drop it rather than keep serving it, as `remove`
            // would.
            self.remove_older(hash, key, version);
            return Err(Rejected::Stale);
        }
        if version > floor {
            self.floors.raise(hash, version);
        }
        // Clone once now so a `Bytes` built from a `Vec` becomes shared here, not on the
        // first hit: hits must not allocate.
        drop(value.clone());
        let idx = match self.find(hash, key) {
            Some(idx) => {
                self.slab.update(idx, value, version, expires);
                placement.on_update(&mut self.slab, idx);
                idx
            }
            None => {
                let node = Node::new(key.into(), value, hash, version, expires);
                let idx = self.slab.alloc(node);
                let slab = &self.slab;
                self.index.insert_unique(hash, idx, |&i| slab.node(i).hash);
                placement.on_insert(&mut self.slab, idx);
                idx
            }
        };
        self.counters.inserts += 1;
        while self.slab.bytes() > self.capacity {
            let victim = placement
                .victim(&self.slab, idx)
                .expect("an entry that fits alone leaves something else to evict");
            self.discard(victim, Reason::Evicted, out.as_deref_mut());
        }
        Ok(())
    }

    /// Raises the key's floor to `version` and drops its entry if older than that.
    pub(crate) fn remove(&mut self, hash: u64, key: &str, version: u64) -> bool {
        self.floors.raise(hash, version);
        self.remove_older(hash, key, version)
    }

    /// Drops the key's entry if its version is below `version`.
    fn remove_older(&mut self, hash: u64, key: &str, version: u64) -> bool {
        match self.find(hash, key) {
            Some(idx) if self.slab.node(idx).version < version => {
                self.take(idx);
                true
            }
            _ => false,
        }
    }

    /// Visits up to `budget` slab slots from where the last sweep stopped and drops the
    /// expired entries among them. Returns how many it dropped.
    pub(crate) fn sweep(
        &mut self,
        now: u64,
        budget: usize,
        mut out: Option<&mut Vec<Evicted>>,
    ) -> usize {
        let mut dropped = 0;
        for _ in 0..budget.min(self.slab.slots()) {
            if self.cursor >= self.slab.slots() {
                self.cursor = 0;
            }
            let idx = self.cursor as u32;
            self.cursor += 1;
            if self.slab.live(idx).is_some() && self.expired(idx, now) {
                self.discard(idx, Reason::Expired, out.as_deref_mut());
                dropped += 1;
            }
        }
        dropped
    }

    /// Drops every entry whose key `keep` refuses (not counted as an eviction). Returns
    /// how many it dropped.
    pub(crate) fn retain(&mut self, keep: &mut dyn FnMut(&str) -> bool) -> usize {
        let mut dropped = 0;
        for idx in 0..self.slab.slots() {
            if self.slab.live(idx as u32).is_some_and(|n| !keep(&n.key)) {
                self.take(idx as u32);
                dropped += 1;
            }
        }
        dropped
    }

    /// The live entries whose key `pick` accepts, most recently used first (the
    /// protected list before the probation one), each taken out of the table when
    /// `take` (not counted as an eviction). Expired entries are skipped.
    pub(crate) fn collect(
        &mut self,
        pick: &mut dyn FnMut(&str) -> bool,
        now: u64,
        take: bool,
    ) -> Vec<(Box<str>, Hit)> {
        let order: Vec<u32> = (self.slab.walk(1))
            .chain(self.slab.walk(0))
            .filter(|&idx| {
                let n = self.slab.node(idx);
                n.expires > now && pick(&n.key)
            })
            .collect();
        (order.into_iter())
            .map(|idx| {
                let hit = self.slab.node(idx).hit();
                let key = match take {
                    true => self.take(idx).0,
                    false => self.slab.node(idx).key.clone(),
                };
                (key, hit)
            })
            .collect()
    }

    pub(crate) fn add_stats(&self, stats: &mut Stats) {
        let c = &self.counters;
        stats.hits += c.hits + c.shared_hits.load(Relaxed);
        stats.misses += c.misses + c.shared_misses.load(Relaxed);
        stats.inserts += c.inserts;
        stats.evictions += c.evictions;
        stats.expirations += c.expirations;
        stats.stale_rejections += c.stale_rejections;
        stats.items += self.slab.len() as u64;
        stats.bytes += self.slab.bytes();
        stats.capacity += self.capacity;
    }
}
