//! Which copies of other members' keys a node keeps (hot.rs), over in-process fake
//! peers: a copy saves the next get its peer call, so the calls say what was kept.

#[path = "common/in_process.rs"]
mod in_process;

use std::time::Duration;

use in_process::InProcess;
use peercache::HotConfig;
use peercache::group::hot::doorkeeper_slots;

const NODES: [&str; 3] = ["a", "b", "c"];

fn cluster(hot: HotConfig) -> InProcess {
    InProcess::new(&NODES, |g| g.hot(hot))
}

/// Gets `key` on node a; true if it took a call to the owner.
async fn asked(c: &InProcess, key: &str) -> bool {
    assert_eq!(c.group("a").get(key).await.unwrap(), format!("v:{key}"));
    !c.take_calls().is_empty()
}

#[tokio::test]
async fn by_default_a_copy_is_kept_on_the_second_fetch_not_the_first() {
    let c = cluster(HotConfig::default());
    let key = c.key_owned_by("b", &["a"]);
    assert!(asked(&c, &key).await, "first get: a call");
    assert!(asked(&c, &key).await, "one fetch keeps no copy");
    assert!(!asked(&c, &key).await, "the second fetch kept one");
    assert_eq!(c.group("a").stats().hot.items, 1);
}

#[tokio::test]
async fn without_the_doorkeeper_a_fill_ratio_of_one_keeps_the_first_fetch() {
    let c = cluster(HotConfig {
        second_fetch: false,
        fill_ratio: 1.0,
        ..HotConfig::default()
    });
    let key = c.key_owned_by("b", &["a"]);
    assert!(asked(&c, &key).await);
    assert!(!asked(&c, &key).await);
}

#[tokio::test]
async fn a_fill_ratio_between_zero_and_one_keeps_some_first_fetches() {
    let c = cluster(HotConfig {
        second_fetch: false,
        fill_ratio: 0.5,
        ..HotConfig::default()
    });
    let keys: Vec<String> = (0..200)
        .map(|i| format!("k{i}"))
        .filter(|k| c.owner_in_view_of("a", k) != "a")
        .take(60)
        .collect();
    for key in &keys {
        assert!(asked(&c, key).await);
    }
    let mut kept = 0;
    for key in &keys {
        kept += usize::from(!asked(&c, key).await);
    }
    // Half on average; with 60 keys, 10..=50 is certain for any fair sampler.
    assert!((10..=50).contains(&kept), "kept {kept} of 60");
}

#[tokio::test]
async fn with_no_sampling_and_no_doorkeeper_no_copy_is_kept() {
    let c = cluster(HotConfig {
        second_fetch: false,
        fill_ratio: 0.0,
        ..HotConfig::default()
    });
    let key = c.key_owned_by("b", &["a"]);
    for _ in 0..3 {
        assert!(asked(&c, &key).await);
    }
    assert_eq!(c.group("a").stats().hot.items, 0);
}

/// Copies carry the owner's version, but a node may have seen a higher one for the key
/// (an invalidation from an earlier owner, whose versions were ahead): the copy is kept
/// at that version, not refused as stale over and over.
#[tokio::test]
async fn a_copy_from_an_owner_behind_an_invalidation_seen_earlier_is_kept() {
    let c = cluster(HotConfig {
        second_fetch: false,
        fill_ratio: 1.0,
        ..HotConfig::default()
    });
    let key = c.key_owned_by("b", &["a"]);
    c.group("a").invalidate(&key, 50).unwrap();
    assert!(asked(&c, &key).await);
    assert!(
        !asked(&c, &key).await,
        "kept although b's version is below 50"
    );
    // A later invalidation at the same version still drops it.
    c.group("a").invalidate(&key, 50).unwrap();
    assert!(asked(&c, &key).await);
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_drops_expired_copies_and_counts_them() {
    let hot = HotConfig {
        second_fetch: false,
        fill_ratio: 1.0,
        ttl: Duration::from_secs(10),
        ..HotConfig::default()
    };
    let c = cluster(hot);
    let key = c.key_owned_by("b", &["a"]);
    assert!(asked(&c, &key).await);
    let a = c.group("a");
    assert_eq!(a.stats().hot.items, 1);
    assert_eq!(a.sweep(), 0, "nothing expired yet");
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(a.sweep(), 1);
    assert_eq!(a.stats().hot.items, 0);
    assert_eq!(a.stats().hot.expirations, 1);
}

#[test]
fn the_doorkeeper_has_a_slot_per_256_bytes_of_hot_capacity_within_bounds() {
    assert_eq!(doorkeeper_slots(0), 1 << 10);
    assert_eq!(doorkeeper_slots(1 << 20), 1 << 12);
    assert_eq!(
        doorkeeper_slots(3 << 20),
        1 << 14,
        "rounded up to a power of two"
    );
    assert_eq!(doorkeeper_slots(1 << 40), 1 << 20);
}
