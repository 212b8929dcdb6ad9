//! `Sharded` as a thread-safe store: integrity under concurrency, the listener outside
//! the lock, incremental sweeping.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use peercache::store::{Entry, Evicted, Lru, Lru2, Reason, Sharded, Store, entry_charge};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[test]
fn two_threads_never_see_another_keys_value_and_stay_within_capacity() {
    let capacity = 64 * 1024;
    let store = Sharded::new(capacity, 8, Lru2::new);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let store = &store;
            s.spawn(move || {
                let mut rng = SmallRng::seed_from_u64(t);
                for i in 0..20_000u64 {
                    let key = format!("k{}", rng.random_range(0..500));
                    match rng.random_range(0..10) {
                        0..6 => {
                            if let Some(hit) = store.get(&key, Duration::ZERO) {
                                let v = String::from_utf8(hit.value.to_vec()).unwrap();
                                assert!(v.starts_with(&format!("{key}=")), "{key} -> {v}");
                            }
                        }
                        6..9 => {
                            let value = format!("{key}={}", "x".repeat(rng.random_range(0..400)));
                            let _ = store.insert(&key, Entry::new(value, i));
                        }
                        _ => {
                            store.remove(&key, i);
                        }
                    }
                    if i % 512 == 0 {
                        let st = store.stats();
                        assert!(st.bytes <= st.capacity, "{} > {}", st.bytes, st.capacity);
                    }
                }
            });
        }
    });
    let st = store.stats();
    assert!(st.bytes <= capacity && st.items > 0);
    assert_eq!(st.capacity, capacity);
}

#[test]
fn the_listener_runs_outside_the_bucket_lock() {
    // Run on a thread with a deadline: a regression deadlocks, and must fail, not hang.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        listener_reads_the_store();
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(Duration::from_secs(30))
        .expect("the listener deadlocked on the bucket lock");
}

fn listener_reads_the_store() {
    // A listener that reads the store would deadlock if called under the bucket lock.
    let store: Arc<OnceLock<Sharded<Lru>>> = Arc::new(OnceLock::new());
    let seen = Arc::new(AtomicUsize::new(0));
    let listener = {
        let (store, seen) = (store.clone(), seen.clone());
        Arc::new(move |e: &Evicted| {
            assert_eq!(e.reason, Reason::Evicted);
            let s = store.get().expect("store set");
            assert!(
                s.get(&e.key, Duration::ZERO).is_none(),
                "evicted entry is gone"
            );
            seen.fetch_add(1, Ordering::SeqCst);
        })
    };
    let one = entry_charge("k00", b"v");
    assert!(
        store
            .set(Sharded::new(4 * one, 1, Lru::new).with_listener(listener))
            .is_ok()
    );
    let s = store.get().unwrap();
    for i in 0..10 {
        s.insert(&format!("k{i:02}"), Entry::new(Bytes::from_static(b"v"), 0))
            .unwrap();
    }
    assert_eq!(seen.load(Ordering::SeqCst), 6);
    assert_eq!(s.stats().evictions, 6);
}

#[test]
fn sweeping_is_incremental_and_eventually_complete() {
    let store = Sharded::new(64 << 20, 2, Lru2::new);
    let n = 20_000;
    for i in 0..n {
        let entry = Entry {
            value: Bytes::from_static(b"v"),
            version: 0,
            expires_at: Some(Duration::from_secs(if i % 2 == 0 { 10 } else { 100 })),
        };
        store.insert(&format!("k{i}"), entry).unwrap();
    }
    assert_eq!(
        store.sweep(Duration::from_secs(5)),
        0,
        "nothing expired yet"
    );
    let now = Duration::from_secs(50);
    let first = store.sweep(now);
    assert!(first > 0 && first < n / 2, "one call is bounded: {first}");
    let mut total = first;
    for _ in 0..10 {
        total += store.sweep(now);
    }
    assert_eq!(
        total,
        n / 2,
        "repeated sweeps drop every expired entry exactly once"
    );
    assert_eq!(store.len(), n / 2);
    assert!(store.get("k0", now).is_none() && store.get("k1", now).is_some());
}

#[test]
fn buckets_round_up_to_a_power_of_two_and_split_capacity() {
    let store = Sharded::new(1 << 20, 5, Lru::new);
    assert_eq!(store.buckets(), 8);
    assert_eq!(store.max_charge(), (1 << 20) / 8);
    let too_big = Bytes::from(vec![0; (1 << 20) / 8]);
    assert!(store.insert("k", Entry::new(too_big, 0)).is_err());
    assert!(store.is_empty());
}
