//! The mechanism under both policies: a slab of entries threaded on two intrusive
//! doubly linked lists, each list counting its entries and bytes, each entry carrying a
//! reference bit.
//!
//! Slab indices (`u32`) stand in for pointers, so a hit allocates nothing and moving an
//! entry to the front of a list is four index writes. Freed slots are reused before the
//! slab grows.
//!
//! The slab keeps no index and knows nothing of versions or time: [`super::core`] decides
//! what enters and leaves, a policy decides which list an entry sits on and where.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use bytes::Bytes;

use super::{ENTRY_OVERHEAD, Hit};

/// "No entry" in list links.
const NIL: u32 = u32::MAX;
/// `list` of a slab slot that holds no entry.
const FREE: u8 = u8::MAX;

/// Bytes an entry counts against capacity.
pub(crate) fn charge(key_len: usize, value_len: usize) -> u64 {
    (key_len + value_len) as u64 + ENTRY_OVERHEAD
}

/// A slot of the slab: an entry and its place on a list. Only the slab changes a node
/// that is on a list, so the lists' byte counts stay true.
pub(crate) struct Node {
    pub(crate) key: Box<str>,
    value: Bytes,
    pub(crate) hash: u64,
    pub(crate) version: u64,
    pub(crate) expires: u64,
    prev: u32,
    next: u32,
    list: u8,
    /// Its list's `pushes` when this entry was last put at the front of it.
    stamp: u64,
    /// Read since it was last put at the front of a list (CLOCK's reference bit).
    referenced: AtomicBool,
}

impl Node {
    /// An entry on no list yet, for [`Slab::alloc`].
    pub(crate) fn new(key: Box<str>, value: Bytes, hash: u64, version: u64, expires: u64) -> Self {
        Node {
            key,
            value,
            hash,
            version,
            expires,
            prev: NIL,
            next: NIL,
            list: FREE,
            stamp: 0,
            referenced: AtomicBool::new(false),
        }
    }

    fn charge(&self) -> u64 {
        charge(self.key.len(), self.value.len())
    }

    #[inline]
    pub(crate) fn hit(&self) -> Hit {
        Hit {
            value: self.value.clone(),
            version: self.version,
            expires: self.expires,
        }
    }

    /// Sets the reference bit.
    #[inline]
    pub(crate) fn mark_referenced(&self) {
        // Test first: a hot entry's line is then only read, not written, by every hit.
        if !self.referenced.load(Relaxed) {
            self.referenced.store(true, Relaxed);
        }
    }
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

/// The entries of one table and the two lists they sit on.
pub(crate) struct Slab {
    nodes: Vec<Node>,
    free: Vec<u32>,
    lists: [List; 2],
}

impl Slab {
    pub(crate) fn new() -> Self {
        Slab {
            nodes: Vec::new(),
            free: Vec::new(),
            lists: [List::EMPTY; 2],
        }
    }

    /// The entry at `idx`, which must be a live one.
    #[inline]
    pub(crate) fn node(&self, idx: u32) -> &Node {
        &self.nodes[idx as usize]
    }

    /// The entry in slot `idx`, or `None` if the slot is free.
    pub(crate) fn live(&self, idx: u32) -> Option<&Node> {
        let n = &self.nodes[idx as usize];
        (n.list != FREE).then_some(n)
    }

    /// Slots in the slab, free or not: live entries have indices below this.
    pub(crate) fn slots(&self) -> usize {
        self.nodes.len()
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

    /// Stores `node` in a free slot (or a new one) and returns its index. It is on no
    /// list until a policy puts it on one.
    pub(crate) fn alloc(&mut self, node: Node) -> u32 {
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

    /// Takes `idx` off its list, frees its slot and returns its key and value.
    pub(crate) fn take(&mut self, idx: u32) -> (Box<str>, Bytes) {
        self.unlink(idx);
        let node = &mut self.nodes[idx as usize];
        node.list = FREE;
        self.free.push(idx);
        (
            std::mem::take(&mut node.key),
            std::mem::take(&mut node.value),
        )
    }

    /// Gives entry `idx` a new value and moves it to the front of its own list (off and
    /// on again, so the list's bytes follow the new size).
    pub(crate) fn update(&mut self, idx: u32, value: Bytes, version: u64, expires: u64) {
        let list = self.list_of(idx);
        self.unlink(idx);
        let n = &mut self.nodes[idx as usize];
        n.value = value;
        n.version = version;
        n.expires = expires;
        self.push_front(list, idx);
    }

    /// The entries of `list`, most recent first.
    pub(crate) fn walk(&self, list: usize) -> impl Iterator<Item = u32> + '_ {
        let head = self.lists[list].head;
        std::iter::successors((head != NIL).then_some(head), |&i| {
            let next = self.nodes[i as usize].next;
            (next != NIL).then_some(next)
        })
    }

    /// The least recent entry of `list` other than `keep`.
    pub(crate) fn tail_except(&self, list: usize, keep: u32) -> Option<u32> {
        let mut t = self.lists[list].tail;
        if t == keep {
            t = self.nodes[t as usize].prev;
        }
        (t != NIL).then_some(t)
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

    /// Moves `idx` to the front of `list` (its own or another).
    pub(crate) fn move_to_front(&mut self, list: usize, idx: u32) {
        if self.lists[list].head != idx {
            self.unlink(idx);
            self.push_front(list, idx);
        }
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
}
