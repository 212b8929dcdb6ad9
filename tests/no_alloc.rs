//! "No allocation on a hit": counts this thread's heap allocations around cache hits.
//!
//! One test per binary: the counting allocator is process-wide, so other tests would
//! only add noise (the counter is per thread, but keep it simple).

#![allow(unsafe_code)]

#[path = "common/in_process.rs"]
mod in_process;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use bytes::Bytes;
use peercache::store::{Entry, Lru, Lru2, Sharded, Store};
use peercache::{LoaderFn, Registry};

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: every call is forwarded unchanged to the system allocator; the only addition
// is a thread-local counter, which itself never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

fn hits_allocate_nothing(store: &dyn Store, keys: &[String]) {
    for k in keys {
        // A value built from a Vec, the case that would allocate on its first clone.
        store
            .insert(k, Entry::new(Bytes::from(vec![7u8; 64]), 0))
            .unwrap();
    }
    // Counted from the very first hit: LRU2's promotions included.
    let n = allocations_during(|| {
        for _ in 0..10 {
            for k in keys {
                let hit = store.get(k, Duration::ZERO).expect("present");
                assert_eq!(hit.value.len(), 64);
            }
        }
    });
    assert_eq!(n, 0, "{n} allocations in {} hits", 10 * keys.len());
}

#[test]
fn hits_do_not_allocate() {
    let keys: Vec<String> = (0..1000).map(|i| format!("key{i}")).collect();
    hits_allocate_nothing(&Sharded::new(1 << 20, 1, Lru::new), &keys);
    hits_allocate_nothing(&Sharded::new(1 << 20, 16, Lru2::new), &keys);

    // Through a group too: validation, stats and the store, on a hit.
    let registry = Registry::new();
    let group = registry
        .group("g")
        .loader(LoaderFn(|key: String| async move {
            Ok::<_, peercache::Error>(Bytes::from(key.into_bytes()))
        }))
        .build()
        .unwrap();
    let get = |k: &str| futures::executor::block_on(group.get(k)).unwrap();
    for k in &keys {
        get(k); // the miss: loads, allocates
    }
    let n = allocations_during(|| {
        for k in &keys {
            assert_eq!(get(k), k.as_bytes());
        }
    });
    assert_eq!(n, 0, "{n} allocations in {} group hits", keys.len());

    // A main-cache hit on a node that is one of three members: the ownership check (the
    // ring lookup through the picker's current view) allocates nothing either.
    let cluster = in_process::InProcess::new(&["a", "b", "c"], |g| g);
    let group = cluster.group("a");
    let owned: Vec<&String> = keys
        .iter()
        .filter(|k| cluster.owner_in_view_of("a", k) == "a")
        .collect();
    assert!(owned.len() > 200, "a owns about a third of the keys");
    let get = |k: &str| futures::executor::block_on(group.get(k)).unwrap();
    for k in &owned {
        assert_eq!(get(k), format!("v:{k}")); // the miss: loads, allocates
    }
    let n = allocations_during(|| {
        for k in &owned {
            assert_eq!(get(k).len(), k.len() + 2);
        }
    });
    assert_eq!(n, 0, "{n} allocations in {} clustered hits", owned.len());
    assert_eq!(group.stats().hits, owned.len() as u64);
    assert_eq!(group.stats().peer_loads, 0, "every key read is owned by a");
}
