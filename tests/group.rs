//! Group behaviour: read-through, dedup, errors, limits, versions, TTL.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use peercache::store::ENTRY_OVERHEAD;
use peercache::{Error, Group, HotConfig, Loader, LoaderFn, PolicyKind, Registry, Result};
use tokio::sync::{Notify, Semaphore};

/// A loader that counts calls and answers `v<n>:<key>` for its n-th call.
#[derive(Clone, Default)]
struct Source {
    calls: Arc<AtomicUsize>,
}

impl Source {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn loader(&self) -> Self {
        self.clone()
    }
}

#[async_trait::async_trait]
impl Loader for Source {
    async fn load(&self, key: &str) -> Result<Bytes> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Bytes::from(format!("v{n}:{key}")))
    }
}

/// Test time: tokio's clock, which the tests that move it start paused.
struct Clock;

impl Clock {
    async fn advance(&self, by: Duration) {
        tokio::time::advance(by).await;
    }
}

fn registry() -> (Registry, Clock) {
    (Registry::new(), Clock)
}

fn group(registry: &Registry, source: &Source) -> Group {
    registry
        .group("g")
        .capacity(1 << 20)
        .loader(source.loader())
        .build()
        .unwrap()
}

#[tokio::test]
async fn miss_loads_once_then_hits() {
    let (reg, _) = registry();
    let src = Source::default();
    let g = group(&reg, &src);
    assert_eq!(g.get("a").await.unwrap(), "v1:a");
    assert_eq!(g.get("a").await.unwrap(), "v1:a");
    assert_eq!(g.get("b").await.unwrap(), "v2:b");
    let s = g.stats();
    assert_eq!((s.gets, s.hits, s.loads, s.loads_deduped), (3, 1, 2, 0));
    assert_eq!(s.store.items, 2);
    assert!(s.store.bytes > 0 && s.store.bytes <= s.store.capacity);
}

/// `get_if_cached` answers a hit as `get` would and counts it the same; a miss or a bad
/// key is `None`, counts nothing and loads nothing.
#[tokio::test]
async fn get_if_cached_answers_hits_only_and_counts_them_as_gets() {
    let (reg, _) = registry();
    let src = Source::default();
    let g = group(&reg, &src);
    assert_eq!(g.get_if_cached("a"), None);
    assert_eq!(g.get_if_cached(""), None);
    assert_eq!(src.calls(), 0, "a miss loads nothing");
    assert_eq!(g.stats().gets, 0);
    assert_eq!(g.get("a").await.unwrap(), "v1:a");
    assert_eq!(g.get_if_cached("a").unwrap(), "v1:a");
    let s = g.stats();
    assert_eq!((s.gets, s.hits, s.loads), (2, 1, 1));
}

/// A loader parked on a semaphore, so tests decide when a load finishes.
struct Gated {
    calls: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
    answer: &'static str,
}

#[async_trait::async_trait]
impl Loader for Gated {
    async fn load(&self, _key: &str) -> Result<Bytes> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.gate.acquire().await.expect("gate open").forget();
        Ok(Bytes::from_static(self.answer.as_bytes()))
    }
}

/// A group whose loader is [`Gated`]; returns the group, its load counter and its gate.
fn gated_group(reg: &Registry, answer: &'static str) -> (Group, Arc<AtomicUsize>, Arc<Semaphore>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let loader = Gated {
        calls: calls.clone(),
        gate: gate.clone(),
        answer,
    };
    let g = reg.group("g").loader(loader).build().unwrap();
    (g, calls, gate)
}

fn spawn_get(g: &Group, key: &'static str) -> tokio::task::JoinHandle<Result<Bytes>> {
    let g = g.clone();
    tokio::spawn(async move { g.get(key).await })
}

/// Yields until the loader has been called `n` times.
async fn until_loads(calls: &AtomicUsize, n: usize) {
    while calls.load(Ordering::SeqCst) < n {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn thousand_concurrent_gets_of_a_cold_key_make_one_load() {
    let (reg, _) = registry();
    let (g, calls, gate) = gated_group(&reg, "value");
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let g = g.clone();
            tokio::spawn(async move { g.get("cold").await })
        })
        .collect();
    // Single-threaded runtime: after a yield, every task has parked inside `get`.
    while calls.load(Ordering::SeqCst) == 0 || g.stats().gets < 1000 {
        tokio::task::yield_now().await;
    }
    tokio::task::yield_now().await;
    gate.add_permits(1);
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "value");
    }
    let s = g.stats();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!((s.loads, s.loads_deduped), (1, 999));
}

#[tokio::test]
async fn followers_receive_the_load_a_cancelled_get_started() {
    let (reg, _) = registry();
    let (g, calls, gate) = gated_group(&reg, "value");
    let leader = spawn_get(&g, "k");
    until_loads(&calls, 1).await;
    let followers: Vec<_> = (0..5)
        .map(|_| {
            let g = g.clone();
            tokio::spawn(async move { g.get("k").await })
        })
        .collect();
    tokio::task::yield_now().await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    // The load goes on without the get that started it; let it finish.
    gate.add_permits(1);
    for f in followers {
        let v = tokio::time::timeout(Duration::from_secs(5), f)
            .await
            .expect("no hang");
        assert_eq!(v.unwrap().unwrap(), "value");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the load was not started again"
    );
}

#[tokio::test]
async fn loader_errors_reach_the_caller_and_are_not_cached() {
    let (reg, _) = registry();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let g = reg
        .group("g")
        .loader(LoaderFn(move |key: String| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                match (key.as_str(), n) {
                    ("missing", _) => Err(Error::NotFound(key)),
                    ("flaky", 0) => Err(Error::load("database timed out")),
                    _ => Ok(Bytes::from("ok")),
                }
            }
        }))
        .build()
        .unwrap();
    assert_eq!(
        g.get("flaky").await,
        Err(Error::Load("database timed out".into()))
    );
    assert_eq!(
        g.get("flaky").await.unwrap(),
        "ok",
        "the error was not cached"
    );
    assert_eq!(
        g.get("missing").await,
        Err(Error::NotFound("missing".into()))
    );
    assert_eq!(
        g.get("missing").await,
        Err(Error::NotFound("missing".into()))
    );
    let s = g.stats();
    assert_eq!((s.loads, s.local_load_errors, s.store.items), (4, 3, 1));
}

#[tokio::test]
async fn a_panicking_loader_is_an_error_not_a_crash() {
    let (reg, _) = registry();
    let g = reg
        .group("g")
        .loader(LoaderFn(|key: String| async move {
            if key == "boom" {
                panic!("bad row");
            }
            Ok(Bytes::from("fine"))
        }))
        .build()
        .unwrap();
    let err = g.get("boom").await.unwrap_err();
    assert_eq!(err, Error::Load("loader panicked: bad row".into()));
    assert_eq!(g.get("other").await.unwrap(), "fine");
    assert_eq!(g.stats().local_load_errors, 1);
}

#[tokio::test]
async fn bad_keys_and_values_get_typed_errors() {
    let (reg, _) = registry();
    let src = Source::default();
    let g = reg
        .group("g")
        .capacity(1 << 20)
        .max_key_len(8)
        .max_value_len(8)
        .loader(src.loader())
        .build()
        .unwrap();
    assert_eq!(g.get("").await, Err(Error::EmptyKey));
    assert_eq!(
        g.get("123456789").await,
        Err(Error::KeyTooLong { len: 9, max: 8 })
    );
    assert_eq!(g.set("", Bytes::new(), None).await, Err(Error::EmptyKey));
    assert_eq!(g.remove("").await, Err(Error::EmptyKey));
    assert_eq!(
        g.set("k", Bytes::from(vec![0; 9]), None).await,
        Err(Error::ValueTooLarge { len: 9, max: 8 })
    );
    // A loaded value over the limit is the source's failure (a 502, where a client's
    // oversize Set is a 413), and is not cached.
    assert_eq!(
        g.get("12345678").await,
        Err(Error::load(
            "the source's value is 11 bytes: exceeds the 8-byte limit"
        ))
    );
    assert_eq!(src.calls(), 1, "invalid keys never reach the loader");
    assert_eq!(g.stats().store.items, 0);
    assert_eq!(g.get("k").await.unwrap(), "v2:k");
}

#[tokio::test]
async fn a_fill_that_started_before_a_set_never_overwrites_it() {
    let (reg, _) = registry();
    let (g, calls, gate) = gated_group(&reg, "old");
    let fill = spawn_get(&g, "k");
    until_loads(&calls, 1).await;
    // The load is in progress. A writer updates the source and sets the new value.
    let version = g.set("k", Bytes::from("new"), None).await.unwrap();
    assert!(version > 0);
    gate.add_permits(1);
    assert_eq!(
        fill.await.unwrap().unwrap(),
        "old",
        "the fill's caller gets what it loaded"
    );
    assert_eq!(g.get("k").await.unwrap(), "new", "the cache keeps the Set");
    assert_eq!(g.stats().store.stale_rejections, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_fill_that_started_before_a_remove_does_not_bring_the_value_back() {
    let (reg, _) = registry();
    let (g, calls, gate) = gated_group(&reg, "old");
    let fill = spawn_get(&g, "k");
    until_loads(&calls, 1).await;
    g.remove("k").await.unwrap();
    gate.add_permits(1);
    fill.await.unwrap().unwrap();
    assert_eq!(g.stats().store.items, 0, "the stale fill was refused");
    // The next get loads again (the source is the truth after a Remove).
    gate.add_permits(1);
    g.get("k").await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn versions_increase_and_remove_then_get_reloads() {
    let (reg, _) = registry();
    let src = Source::default();
    let g = group(&reg, &src);
    let v1 = g.set("k", Bytes::from("a"), None).await.unwrap();
    let v2 = g.set("k", Bytes::from("b"), None).await.unwrap();
    assert!(v2 > v1);
    assert_eq!(g.get("k").await.unwrap(), "b");
    let v3 = g.remove("k").await.unwrap();
    assert!(v3 > v2);
    assert_eq!(g.get("k").await.unwrap(), "v1:k");
    assert_eq!(src.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn entries_expire_after_their_ttl_on_the_clock() {
    let (reg, clock) = registry();
    let src = Source::default();
    let g = reg
        .group("g")
        .ttl(Duration::from_secs(10))
        .loader(src.loader())
        .build()
        .unwrap();
    assert_eq!(g.get("k").await.unwrap(), "v1:k");
    clock.advance(Duration::from_secs(9)).await;
    assert_eq!(g.get("k").await.unwrap(), "v1:k");
    clock.advance(Duration::from_secs(1)).await;
    assert_eq!(
        g.get("k").await.unwrap(),
        "v2:k",
        "expired at exactly its TTL"
    );
    // A per-entry TTL overrides the group's.
    g.set("short", Bytes::from("s"), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(2)).await;
    assert_eq!(g.get("short").await.unwrap(), "v3:short");
    assert_eq!(g.stats().store.expirations, 2);
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_drops_expired_entries_without_reads() {
    let (reg, clock) = registry();
    let src = Source::default();
    let g = reg
        .group("g")
        .ttl(Duration::from_secs(5))
        .loader(src.loader())
        .build()
        .unwrap();
    for i in 0..100 {
        g.get(&format!("k{i}")).await.unwrap();
    }
    let sweeper = tokio::spawn({
        let reg = reg.clone();
        async move { reg.run_sweeper(Duration::from_secs(1)).await }
    });
    tokio::task::yield_now().await;
    clock.advance(Duration::from_secs(3)).await;
    tokio::task::yield_now().await;
    assert_eq!(g.stats().store.items, 100);
    clock.advance(Duration::from_secs(3)).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let s = g.stats();
    assert_eq!(
        (s.store.items, s.store.bytes, s.store.expirations),
        (0, 0, 100)
    );
    sweeper.abort();
}

async fn expiries_with_seed(seed: u64) -> Vec<u64> {
    let clock = Clock;
    let reg = Registry::with_seed(seed);
    let src = Source::default();
    let g = reg
        .group("g")
        .ttl(Duration::from_secs(100))
        .ttl_jitter(0.5)
        .loader(src.loader())
        .build()
        .unwrap();
    for i in 0..50 {
        g.get(&format!("k{i}")).await.unwrap();
    }
    // Find each entry's expiry by stepping the clock one second at a time.
    let mut alive: Vec<usize> = (0..50).collect();
    let mut expiries = vec![0u64; 50];
    for t in 1..=100u64 {
        clock.advance(Duration::from_secs(1)).await;
        let mut still = Vec::new();
        for &i in &alive {
            let before = src.calls();
            let v = g.get(&format!("k{i}")).await.unwrap();
            if src.calls() > before {
                expiries[i] = t;
                assert!(v.starts_with(b"v"));
            } else {
                still.push(i);
            }
        }
        alive = still;
    }
    expiries
}

#[tokio::test(start_paused = true)]
async fn ttl_jitter_spreads_expiries_within_bounds_and_replays_by_seed() {
    let a = expiries_with_seed(7).await;
    assert!(a.iter().all(|&t| (50..=100).contains(&t)), "{a:?}");
    let distinct: std::collections::BTreeSet<_> = a.iter().collect();
    assert!(distinct.len() > 10, "jitter spreads expiries: {a:?}");
    assert_eq!(a, expiries_with_seed(7).await, "same seed, same expiries");
    assert_ne!(a, expiries_with_seed(8).await);
}

#[tokio::test]
async fn eviction_keeps_bytes_within_capacity_and_tells_the_listener() {
    let (reg, _) = registry();
    let src = Source::default();
    let evicted = Arc::new(AtomicUsize::new(0));
    let e = evicted.clone();
    let g = reg
        .group("g")
        .capacity(10_000)
        .policy(PolicyKind::Lru)
        .on_evict(Arc::new(move |_| {
            e.fetch_add(1, Ordering::SeqCst);
        }))
        .loader(src.loader())
        .build()
        .unwrap();
    for i in 0..1000 {
        g.get(&format!("key{i}")).await.unwrap();
        let s = g.stats().store;
        assert!(s.bytes <= s.capacity, "{} > {}", s.bytes, s.capacity);
    }
    let s = g.stats().store;
    assert!(s.evictions > 0);
    assert_eq!(evicted.load(Ordering::SeqCst) as u64, s.evictions);
    assert_eq!(s.inserts - s.evictions, s.items);
}

#[tokio::test]
async fn registry_names_groups_uniquely_and_checks_configuration() {
    let (reg, _) = registry();
    let src = Source::default();
    group(&reg, &src);
    assert_eq!(
        reg.group("g").loader(src.loader()).build().unwrap_err(),
        Error::GroupExists("g".into())
    );
    assert_eq!(
        reg.get("nope").unwrap_err(),
        Error::UnknownGroup("nope".into())
    );
    assert_eq!(reg.get("g").unwrap().name(), "g");
    let bad = [
        reg.group("").loader(src.loader()).build(),
        reg.group("x").build(),
        reg.group("x").ttl_jitter(1.5).loader(src.loader()).build(),
        reg.group("x").capacity(100).loader(src.loader()).build(),
        reg.group("x")
            .capacity(4096)
            .max_value_len(8192)
            .loader(src.loader())
            .build(),
        reg.group("x")
            .capacity(1 << 20)
            .buckets(1024)
            .max_value_len(4096)
            .loader(src.loader())
            .build(),
    ];
    for b in bad {
        assert!(matches!(b, Err(Error::Config(_))), "{b:?}");
    }
    // A small group lowers its default value limit to what fits.
    let small = reg
        .group("small")
        .capacity(4096)
        .loader(src.loader())
        .build()
        .unwrap();
    assert!(small.limits().1 < 4096);
    assert_eq!(
        reg.groups()
            .iter()
            .map(|g| g.name().to_owned())
            .collect::<Vec<_>>(),
        ["g", "small"]
    );
}

#[tokio::test]
async fn a_follower_waits_for_the_leader_and_shares_its_value() {
    // Neither get finishes before the source answers; then both have its one value.
    let (reg, _) = registry();
    let notify = Arc::new(Notify::new());
    let n = notify.clone();
    let g = reg
        .group("g")
        .loader(LoaderFn(move |_k: String| {
            let n = n.clone();
            async move {
                n.notified().await;
                Ok(Bytes::from("x"))
            }
        }))
        .build()
        .unwrap();
    let a = spawn_get(&g, "k");
    let b = spawn_get(&g, "k");
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
    assert!(!a.is_finished() && !b.is_finished());
    notify.notify_one();
    assert_eq!(a.await.unwrap().unwrap(), "x");
    assert_eq!(b.await.unwrap().unwrap(), "x");
    assert_eq!(g.stats().loads_deduped, 1);
}

#[tokio::test]
async fn a_get_after_a_remove_does_not_join_a_load_that_started_before_it() {
    let (reg, _) = registry();
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let c = calls.clone();
    let g2 = gate.clone();
    let g = reg
        .group("g")
        .loader(LoaderFn(move |_key: String| {
            let (calls, gate) = (c.clone(), g2.clone());
            async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                gate.acquire().await.expect("gate open").forget();
                Ok(Bytes::from(format!("source v{n}")))
            }
        }))
        .build()
        .unwrap();
    let early = spawn_get(&g, "k");
    until_loads(&calls, 1).await;
    // The writer updated the source and removed the key: reads from now on must not see
    // what the load in progress read from the source before.
    g.remove("k").await.unwrap();
    let late = spawn_get(&g, "k");
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the late get started its own load"
    );
    gate.add_permits(2);
    assert_eq!(early.await.unwrap().unwrap(), "source v1");
    assert_eq!(late.await.unwrap().unwrap(), "source v2");
}

/// Two keys that share the store's version slot (one bucket, so only the slot matters).
fn colliding_keys() -> (String, String) {
    use peercache::store::{VERSION_FLOORS, key_hash};
    let slot = |k: &str| key_hash(k) as usize % VERSION_FLOORS;
    let a = "a".to_owned();
    let b = (0..)
        .map(|i| format!("b{i}"))
        .find(|b| slot(b) == slot(&a))
        .expect("some key shares the slot");
    (a, b)
}

#[test]
fn sets_of_keys_sharing_a_version_slot_never_leave_a_replaced_value_visible() {
    let (a, b) = colliding_keys();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let (reg, _) = registry();
    let src = Source::default();
    let g = reg
        .group("g")
        .buckets(1)
        .loader(src.loader())
        .build()
        .unwrap();
    rt.block_on(async {
        let writer_b = tokio::spawn({
            let g = g.clone();
            async move {
                for i in 0..20_000u32 {
                    g.set(&b, Bytes::from(i.to_string()), None).await.unwrap();
                }
            }
        });
        let checker_a = tokio::spawn({
            let g = g.clone();
            async move {
                for i in 1..20_000u32 {
                    g.set(&a, Bytes::from(format!("a{i}")), None).await.unwrap();
                    let v = g.get(&a).await.unwrap();
                    // Either the value just set, or a reload from the source; never the
                    // value this set replaced.
                    assert!(
                        v == format!("a{i}") || v.starts_with(b"v"),
                        "after set a{i}: {v:?}"
                    );
                }
            }
        });
        writer_b.await.unwrap();
        checker_a.await.unwrap();
    });
}

#[tokio::test(start_paused = true)]
async fn extreme_ttls_and_limits_are_errors_or_work_never_panics() {
    let (reg, clock) = registry();
    let src = Source::default();
    let g = reg
        .group("forever")
        .ttl(Duration::MAX)
        .ttl_jitter(0.5)
        .loader(src.loader())
        .build()
        .unwrap();
    assert_eq!(g.get("k").await.unwrap(), "v1:k");
    g.set("k2", Bytes::from("x"), Some(Duration::MAX))
        .await
        .unwrap();
    clock
        .advance(Duration::from_secs(10 * 365 * 24 * 3600))
        .await;
    assert_eq!(
        g.get("k").await.unwrap(),
        "v1:k",
        "a saturated expiry is in the far future"
    );
    assert_eq!(g.get("k2").await.unwrap(), "x");
    let bad = [
        reg.group("x")
            .max_key_len(usize::MAX)
            .loader(src.loader())
            .build(),
        reg.group("x")
            .policy(PolicyKind::Lru2 { protected: 1.5 })
            .loader(src.loader())
            .build(),
        reg.group("x")
            .policy(PolicyKind::Lru2 {
                protected: f64::NAN,
            })
            .loader(src.loader())
            .build(),
    ];
    for b in bad {
        assert!(matches!(b, Err(Error::Config(_))), "{b:?}");
    }
}

#[tokio::test]
async fn each_setting_is_checked_and_the_size_limits_are_exact() {
    let (reg, _) = registry();
    let src = Source::default();
    let build = |b: peercache::GroupBuilder| b.loader(src.loader()).build();
    let hot = |h: HotConfig| build(reg.group("x").hot(h));
    // Key 16 bytes and value 1,000: the largest entry charges 1,112 bytes.
    let sized = |capacity: u64, value: usize| {
        reg.group(format!("fits-{capacity}-{value}"))
            .capacity(capacity)
            .max_key_len(16)
            .max_value_len(value)
    };
    let largest = ENTRY_OVERHEAD + 16 + 1000;
    let bad = [
        build(reg.group("x").ttl(Duration::ZERO)),
        build(reg.group("x").max_key_len(0)),
        build(reg.group("x").timeout(Duration::ZERO)),
        hot(HotConfig {
            fill_ratio: 1.5,
            ..HotConfig::default()
        }),
        hot(HotConfig {
            ttl: Duration::ZERO,
            ..HotConfig::default()
        }),
        hot(HotConfig {
            fallback_ttl: Duration::ZERO,
            ..HotConfig::default()
        }),
        // Room for the longest key and not one byte of value.
        build(reg.group("x").capacity(ENTRY_OVERHEAD + 16).max_key_len(16)),
        build(sized(largest, 1001)),
        // So large that the entry's size would overflow if it were not refused first.
        build(reg.group("x").max_value_len(usize::MAX)),
        build(sized(4 * largest - 1, 1000).buckets(4)),
    ];
    for b in bad {
        assert!(matches!(b, Err(Error::Config(_))), "{b:?}");
    }
    for fits in [sized(largest, 1000), sized(4 * largest, 1000).buckets(4)] {
        let g = build(fits).unwrap();
        assert_eq!(g.limits(), (16, 1000));
        let (key, value) = ("k".repeat(16), Bytes::from(vec![7; 1000]));
        g.set(&key, value.clone(), None).await.unwrap();
        assert_eq!(
            g.get(&key).await.unwrap(),
            value,
            "the largest entry is kept"
        );
    }
    // The hot cache defaults to an eighth of the main cache.
    let g = group(&reg, &src);
    assert_eq!(g.stats().hot.capacity, (1 << 20) / 8);
}

#[tokio::test]
async fn groups_of_one_node_draw_their_own_ttl_jitter() {
    let (reg, _) = registry();
    let src = Source::default();
    let expiries = |name: &str| {
        let g = reg
            .group(name)
            .ttl(Duration::from_secs(100))
            .ttl_jitter(0.5)
            .loader(src.loader())
            .build()
            .unwrap();
        async move {
            let mut out = Vec::new();
            for i in 0..20 {
                let f = g
                    .get_for_peer(&format!("k{i}"), Duration::from_secs(1))
                    .await;
                out.push(f.unwrap().expires_in.unwrap());
            }
            out
        }
    };
    let (a, b) = (expiries("a").await, expiries("b").await);
    assert_ne!(a, b, "the group's name is mixed into its seed");
}
