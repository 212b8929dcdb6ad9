//! Owner-side hot-key detection on loopback: a key that peers ask its owner for at a
//! high rate becomes hot within about one detection window, the owner flags it in its
//! answers, askers keep it as a hot copy at once (hot copies otherwise off), so the
//! owner stops answering most of its gets; `/v1/hotkeys` lists it, and so does the
//! `peercache_hot_key_qps` gauge in `/metrics`. A key read a few times never is.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, Db, http_get};
use peercache::{HotConfig, HotKeyConfig, Registry};

/// Group "g": hot copies only when the owner flags a key hot (no sampling, no second
/// fetch rule), detection windows of 200 ms, hot from 100 gets/s and 5 % of the gets.
fn setup(db: &Db) -> impl Fn(usize, &Registry) + '_ {
    move |_, reg| {
        reg.group("g")
            .capacity(4 << 20)
            .hot(HotConfig {
                fill_ratio: 0.0,
                second_fetch: false,
                ..HotConfig::default()
            })
            .hot_keys(HotKeyConfig {
                window: Duration::from_millis(200),
                min_rate: 100.0,
                min_share: 0.05,
                top: 8,
                hold: Duration::from_secs(5),
            })
            .timeout(Duration::from_secs(5))
            .loader(db.clone())
            .build()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_is_detected_flagged_and_kept_by_its_askers() {
    let db = Db::default();
    let cluster = Cluster::start(3, setup(&db)).await;
    // A quote in the key: the gauge's label value must be escaped.
    let hot = cluster.key_owned_by(0, "hot\"");
    let cold = cluster.key_owned_by(0, "cold");
    let get = |i: usize, key: &str| {
        let url = format!("{}/v1/groups/g/keys/{key}", cluster.nodes[i].url);
        async move { http_get(&url).await }
    };
    for _ in 0..5 {
        assert_eq!(get(1, &cold).await.0, 200);
    }
    // 1.5 s of gets of the hot key through the two other nodes, as fast as they come.
    let started = Instant::now();
    let mut gets = 0u64;
    while started.elapsed() < Duration::from_millis(1500) {
        for i in [1, 2] {
            let (status, body) = get(i, &hot).await;
            assert_eq!((status, &body[..]), (200, format!("v:{hot}").as_bytes()));
            gets += 1;
        }
    }
    let stats = |i: usize| cluster.nodes[i].group("g").stats();
    let served = stats(0).served_to_peers;
    for i in [1, 2] {
        let s = stats(i);
        assert!(s.hot_flagged >= 1, "node {i} got the hot flag: {s:?}");
        assert!(s.hot_hits > 0, "node {i} answered from its copy: {s:?}");
    }
    // Detection takes a window or two (200-400 ms) of the 1.5 s; after it the askers
    // answer from their copies, so the owner sees well under half of the gets.
    assert!(
        served * 2 < gets,
        "the owner answered {served} of {gets} gets of a hot key"
    );
    // The cold key was never flagged: a copy of it would have needed the flag.
    assert_eq!(cluster.nodes[1].group("g").cached_ttl(&cold), None);
    let listed = http_get(&format!("{}/v1/hotkeys", cluster.nodes[0].url)).await;
    assert_eq!(listed.0, 200);
    let listed: serde_json::Value = serde_json::from_slice(&listed.1).unwrap();
    let keys = listed["groups"]["g"].as_array().expect("a list for g");
    // Hot for the 5 s hold after the last window that found it so.
    assert_eq!(keys.len(), 1, "{listed}");
    assert_eq!(keys[0]["key"], hot.as_str(), "{listed}");
    assert!(keys[0]["rate"].as_f64().unwrap() >= 100.0, "{listed}");
    assert!(keys.iter().all(|k| k["key"] != cold.as_str()), "{listed}");
    assert_the_gauge_shows_only(&cluster.nodes[0].url, &hot, &cold).await;
}

/// The owner's `/metrics` has a `peercache_hot_key_qps` sample for `hot` (its label
/// escaped) and none for `cold`.
async fn assert_the_gauge_shows_only(owner: &str, hot: &str, cold: &str) {
    let (status, body) = http_get(&format!("{owner}/metrics")).await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body.to_vec()).unwrap();
    let samples: Vec<&str> = (text.lines())
        .filter(|l| l.starts_with("peercache_hot_key_qps{"))
        .collect();
    let label = hot.replace('"', "\\\"");
    let prefix = format!("peercache_hot_key_qps{{group=\"g\",key=\"{label}\"}} ");
    let rate: f64 = (samples.iter())
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} sample in\n{text}"))
        .parse()
        .unwrap();
    assert!(rate >= 100.0, "{samples:?}");
    assert_eq!(samples.len(), 1, "{samples:?}");
    assert!(!text.contains(&format!("key=\"{cold}\"")), "{text}");
}
