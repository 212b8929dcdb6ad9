//! The table both policies share: a slab of entries threaded on two intrusive lists,
//! a hash index into the slab, per-key version floors, TTL and counters.
//!
//! A policy ([`super::Lru`], [`super::Lru2`]) decides only where an entry goes on a hit
//! and on insert, and which entry to evict. Everything else is here, once.
//!
//! Slab indices (`u32`) stand in for pointers, so a hit allocates nothing and moving an
//! entry to the front of a list is four index writes.
//!
//! Most hits need no list change at all ([`Placement::read_only_hit`]): those are served
//! by [`Core::peek`] through `&self`, so a bucket can answer them under a shared lock,
//! touching only the entry's reference bit and an atomic counter.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use hashbrown::HashTable;

use super::{ENTRY_OVERHEAD, Evicted, Hit, Peek, Reason, Rejected, Stats};
use super::{EXACT_FLOORS, VERSION_FLOORS as FLOORS};

/// "No entry" in list links.
pub(crate) const NIL: u32 = u32::MAX;
/// `expires` of an entry that never expires.
pub(crate) const NEVER: u64 = u64::MAX;
/// `list` of a slab slot that holds no entry.
const FREE: u8 = u8::MAX;

struct Node {
    key: Box<str>,
    value: Bytes,
    hash: u64,
    version: u64,
    expires: u64,
    prev: u32,
    next: u32,
    list: u8,
    /// Its list's `pushes` when this entry was last put at the front of it.
    stamp: u64,
    /// Read since it was last put at the front of a list (CLOCK's reference bit).
    referenced: AtomicBool,
}

impl Node {
    fn charge(&self) -> u64 {
        charge(self.key.len(), self.value.len())
    }

    #[inline]
    fn hit(&self) -> Hit {
        Hit {
            value: self.value.clone(),
            version: self.version,
            expires: self.expires,
        }
    }

    #[inline]
    fn mark_referenced(&self) {
        // Test first: a hot entry's line is then only read, not written, by every hit.
        if !self.referenced.load(Relaxed) {
            self.referenced.store(true, Relaxed);
        }
    }
}

/// Bytes an entry counts against capacity.
pub(crate) fn charge(key_len: usize, value_len: usize) -> u64 {
    (key_len + value_len) as u64 + ENTRY_OVERHEAD
}

#[derive(Clone, Copy)]
pub(crate) struct List {
    pub(crate) head: u32,
    pub(crate) tail: u32,
    pub(crate) len: usize,
    pub(crate) bytes: u64,
    /// Entries put at the front of this list so far: an entry's position is at most
    /// the number of pushes since its own.
    pushes: u64,
}

impl List {
    const EMPTY: List = List {
        head: NIL,
        tail: NIL,
        len: 0,
        bytes: 0,
        pushes: 0,
    };
}

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
    fn read_only_hit(&self, core: &Core, idx: u32) -> bool;
    /// Entry `idx` (in list `core.list_of(idx)`) was read.
    fn on_hit(&mut self, core: &mut Core, idx: u32);
    /// Entry `idx` got a new value and was moved to the front of its own list.
    fn on_update(&mut self, _core: &mut Core, _idx: u32) {}
    /// Entry `idx` is new and on no list yet.
    fn on_insert(&mut self, core: &mut Core, idx: u32);
    /// The entry to evict next, never `keep` unless nothing else is left.
    fn victim(&self, core: &Core, keep: u32) -> Option<u32>;
}

/// The shared table. Not thread safe: [`super::Sharded`] puts each one behind a lock.
pub(crate) struct Core {
    nodes: Vec<Node>,
    free: Vec<u32>,
    index: HashTable<u32>,
    lists: [List; 2],
    capacity: u64,
    /// Version floors by hash slot: the newest version written or removed for any key
    /// of the slot whose exact floor is no longer kept.
    floors: Box<[u64]>,
    /// Exact floors of the keys written or removed lately, by key hash, so a write to
    /// one key does not refuse a concurrent fill of another that shares its slot. The
    /// oldest spill into `floors` when there are more than `EXACT_FLOORS`.
    exact: std::collections::BTreeMap<u64, u64>,
    /// Hashes in `exact`, oldest first.
    exact_order: std::collections::VecDeque<u64>,
    counters: Counters,
    cursor: usize,
}

impl Core {
    pub(crate) fn new(capacity: u64) -> Self {
        Core {
            nodes: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
            lists: [List::EMPTY; 2],
            capacity,
            floors: vec![0; FLOORS].into_boxed_slice(),
            exact: Default::default(),
            exact_order: Default::default(),
            counters: Counters::default(),
            cursor: 0,
        }
    }

    pub(crate) fn list(&self, n: usize) -> &List {
        &self.lists[n]
    }

    #[inline]
    pub(crate) fn list_of(&self, idx: u32) -> usize {
        usize::from(self.nodes[idx as usize].list)
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.lists[0].bytes + self.lists[1].bytes
    }

    pub(crate) fn len(&self) -> usize {
        self.lists[0].len + self.lists[1].len
    }

    /// The least recent entry of `list` other than `keep`.
    pub(crate) fn tail_except(&self, list: usize, keep: u32) -> Option<u32> {
        let mut t = self.lists[list].tail;
        if t == keep {
            t = self.nodes[t as usize].prev;
        }
        (t != NIL).then_some(t)
    }

    #[inline]
    fn find(&self, hash: u64, key: &str) -> Option<u32> {
        self.index
            .find(hash, |&i| &*self.nodes[i as usize].key == key)
            .copied()
    }

    fn floor_slot(hash: u64) -> usize {
        (hash as usize) & (FLOORS - 1)
    }

    /// The newest version written or removed for the key (or, once its exact floor
    /// has spilled, for any key of its slot).
    pub(crate) fn floor(&self, hash: u64) -> u64 {
        let slot = self.floors[Self::floor_slot(hash)];
        self.exact.get(&hash).map_or(slot, |&v| v.max(slot))
    }

    /// Raises the key's exact floor to `version`, spilling the oldest exact floor into
    /// its slot when there are too many.
    fn raise_floor(&mut self, hash: u64, version: u64) {
        match self.exact.get_mut(&hash) {
            Some(v) => *v = (*v).max(version),
            None => {
                self.exact.insert(hash, version);
                self.exact_order.push_back(hash);
                if self.exact_order.len() > EXACT_FLOORS {
                    let old = self.exact_order.pop_front().expect("over the limit");
                    if let Some(v) = self.exact.remove(&old) {
                        let slot = Self::floor_slot(old);
                        self.floors[slot] = self.floors[slot].max(v);
                    }
                }
            }
        }
    }

    /// Takes `idx` off its list.
    pub(crate) fn unlink(&mut self, idx: u32) {
        let (prev, next, list, charge) = {
            let n = &self.nodes[idx as usize];
            (n.prev, n.next, usize::from(n.list), n.charge())
        };
        match prev {
            NIL => self.lists[list].head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.lists[list].tail = prev,
            n => self.nodes[n as usize].prev = prev,
        }
        self.lists[list].len -= 1;
        self.lists[list].bytes -= charge;
    }

    /// Puts `idx`, which is on no list, at the front of `list`.
    pub(crate) fn push_front(&mut self, list: usize, idx: u32) {
        let head = self.lists[list].head;
        self.lists[list].pushes += 1;
        let stamp = self.lists[list].pushes;
        let charge = {
            let n = &mut self.nodes[idx as usize];
            n.stamp = stamp;
            *n.referenced.get_mut() = false;
            n.prev = NIL;
            n.next = head;
            n.list = list as u8;
            n.charge()
        };
        match head {
            NIL => self.lists[list].tail = idx,
            h => self.nodes[h as usize].prev = idx,
        }
        self.lists[list].head = idx;
        self.lists[list].len += 1;
        self.lists[list].bytes += charge;
    }

    /// True if `idx` is certainly within the most recent quarter of its list, where
    /// moving it to the front would change little. Skipping those moves keeps most hits
    /// on hot keys free of list writes (no neighbour cache lines touched).
    pub(crate) fn near_front(&self, idx: u32) -> bool {
        let n = &self.nodes[idx as usize];
        let list = &self.lists[usize::from(n.list)];
        list.pushes - n.stamp < list.len as u64 / 4
    }

    /// The entry's reference bit: read since it was last put at a list's front.
    pub(crate) fn referenced(&self, idx: u32) -> bool {
        self.nodes[idx as usize].referenced.load(Relaxed)
    }

    /// Sets the entry's reference bit.
    pub(crate) fn reference(&self, idx: u32) {
        self.nodes[idx as usize].mark_referenced();
    }

    /// Looks `key` up without exclusive access. Answers a miss, or a hit the policy
    /// says needs no list change; anything else is `NeedsWrite`.
    #[inline]
    pub(crate) fn peek(&self, placement: &impl Placement, hash: u64, key: &str, now: u64) -> Peek {
        let Some(idx) = self.find(hash, key) else {
            self.counters.shared_misses.fetch_add(1, Relaxed);
            return Peek::Miss;
        };
        let n = &self.nodes[idx as usize];
        if n.expires <= now || !placement.read_only_hit(self, idx) {
            return Peek::NeedsWrite;
        }
        n.mark_referenced();
        self.counters.shared_hits.fetch_add(1, Relaxed);
        Peek::Hit(n.hit())
    }

    /// Moves `idx` to the front of `list` (its own or another).
    pub(crate) fn move_to_front(&mut self, list: usize, idx: u32) {
        if self.lists[list].head != idx {
            self.unlink(idx);
            self.push_front(list, idx);
        }
    }

    /// Removes entry `idx` entirely and returns its key and value.
    fn take(&mut self, idx: u32) -> (Box<str>, Bytes) {
        self.unlink(idx);
        let hash = self.nodes[idx as usize].hash;
        self.index
            .find_entry(hash, |&i| i == idx)
            .expect("every listed entry is indexed")
            .remove();
        let node = &mut self.nodes[idx as usize];
        node.list = FREE;
        self.free.push(idx);
        (
            std::mem::take(&mut node.key),
            std::mem::take(&mut node.value),
        )
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

    fn alloc(&mut self, node: Node) -> u32 {
        match self.free.pop() {
            Some(idx) => {
                self.nodes[idx as usize] = node;
                idx
            }
            None => {
                let idx = u32::try_from(self.nodes.len()).expect("fewer than 2^32 entries");
                self.nodes.push(node);
                idx
            }
        }
    }

    fn expired(&self, idx: u32, now: u64) -> bool {
        self.nodes[idx as usize].expires <= now
    }

    /// Looks `key` up, dropping it if expired, and lets `placement` see the hit.
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
        placement.on_hit(self, idx);
        Some(self.nodes[idx as usize].hit())
    }

    /// Inserts or replaces `key` unless a newer version was seen for it, then evicts
    /// until the table fits its capacity again.
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
        let floor = self.floor(hash);
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
            self.raise_floor(hash, version);
        }
        // Clone once now so a `Bytes` built from a `Vec` becomes shared here, not on the
        // first hit: hits must not allocate.
        drop(value.clone());
        let idx = match self.find(hash, key) {
            Some(idx) => {
                let list = self.list_of(idx);
                self.unlink(idx);
                let n = &mut self.nodes[idx as usize];
                n.value = value;
                n.version = version;
                n.expires = expires;
                self.push_front(list, idx);
                placement.on_update(self, idx);
                idx
            }
            None => {
                let idx = self.alloc(Node {
                    key: key.into(),
                    value,
                    hash,
                    version,
                    expires,
                    prev: NIL,
                    next: NIL,
                    list: FREE,
                    stamp: 0,
                    referenced: AtomicBool::new(false),
                });
                let nodes = &self.nodes;
                self.index
                    .insert_unique(hash, idx, |&i| nodes[i as usize].hash);
                placement.on_insert(self, idx);
                idx
            }
        };
        self.counters.inserts += 1;
        while self.bytes() > self.capacity {
            let victim = placement
                .victim(self, idx)
                .expect("an entry that fits alone leaves something else to evict");
            self.discard(victim, Reason::Evicted, out.as_deref_mut());
        }
        Ok(())
    }

    /// Raises the key's floor to `version` and drops its entry if older than that.
    pub(crate) fn remove(&mut self, hash: u64, key: &str, version: u64) -> bool {
        self.raise_floor(hash, version);
        self.remove_older(hash, key, version)
    }

    /// Drops the key's entry if its version is below `version`.
    fn remove_older(&mut self, hash: u64, key: &str, version: u64) -> bool {
        match self.find(hash, key) {
            Some(idx) if self.nodes[idx as usize].version < version => {
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
        for _ in 0..budget.min(self.nodes.len()) {
            if self.cursor >= self.nodes.len() {
                self.cursor = 0;
            }
            let idx = self.cursor as u32;
            self.cursor += 1;
            if self.nodes[idx as usize].list != FREE && self.expired(idx, now) {
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
        for idx in 0..self.nodes.len() {
            let node = &self.nodes[idx];
            if node.list != FREE && !keep(&node.key) {
                self.take(idx as u32);
                dropped += 1;
            }
        }
        dropped
    }

    pub(crate) fn add_stats(&self, stats: &mut Stats) {
        let c = &self.counters;
        stats.hits += c.hits + c.shared_hits.load(Relaxed);
        stats.misses += c.misses + c.shared_misses.load(Relaxed);
        stats.inserts += c.inserts;
        stats.evictions += c.evictions;
        stats.expirations += c.expirations;
        stats.stale_rejections += c.stale_rejections;
        stats.items += self.len() as u64;
        stats.bytes += self.bytes();
        stats.capacity += self.capacity;
    }
}
