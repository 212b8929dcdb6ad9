//! Peer suspicion on loopback: a member whose calls fail as unreachable is suspected
//! for a back-off period, and meanwhile its keys are answered by the member next to it
//! on the ring, from fallbacks kept up to the hot TTL (not 1 s; or the suspected TTL
//! when set), writes do not wait for its invalidations, and when it answers again the
//! copies of its keys are dropped.

mod common;

use std::time::{Duration, Instant};

use common::process::free_ports;
use common::{Cluster, Db, db_group, http_get};
use peercache::{Member, Ring};

async fn get(url: &str, key: &str) -> (u16, String) {
    let (status, body) = http_get(&format!("{url}/v1/groups/g/keys/{key}")).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Reads every key in `keys` through `nodes` of `cluster` every 50 ms for `span`,
/// asserting each answer is `expect(key)`.
async fn read_for(
    cluster: &Cluster,
    nodes: &[usize],
    keys: &[String],
    span: Duration,
    expect: impl Fn(&str) -> String,
) {
    let started = Instant::now();
    while started.elapsed() < span {
        for key in keys {
            for &i in nodes {
                assert_eq!(
                    get(&cluster.nodes[i].url, key).await,
                    (200, expect(key)),
                    "{key} via node {i}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Before suspicion, each survivor loaded a dead owner's key again every second (the
/// fallback TTL): about 3 loads per key per survivor in 3 s. With suspicion, once per
/// survivor; now that a survivor asks the member that would own the key without the
/// dead one, about once in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_owners_keys_are_loaded_once_per_survivor_then_its_own_again() {
    let db = Db::default();
    let mut cluster = Cluster::start(3, db_group(&db)).await;
    let keys: Vec<String> = (0..90).map(|i| format!("k{i}")).collect();
    let orphaned: Vec<String> = (keys.iter())
        .filter(|k| cluster.owner(k) == 0)
        .cloned()
        .collect();
    assert!(orphaned.len() >= 10, "node 0 owns some of 90 keys");
    cluster.nodes[0].stop().await;

    let v = |key: &str| format!("v:{key}");
    read_for(&cluster, &[1, 2], &orphaned, Duration::from_secs(3), v).await;
    let loads: u64 = orphaned.iter().map(|k| db.loads(k)).sum();
    let n = orphaned.len() as u64;
    eprintln!("{loads} loads of {n} orphaned keys");
    // A key is loaded again where the first load came before that node suspected
    // node 0 too (kept the fallback TTL, 1 s, instead of the hot TTL).
    assert!(
        loads <= n + n / 2,
        "{loads} loads of {n} orphaned keys read through 2 survivors for 3 s"
    );
    let mut failovers = 0;
    for i in [1, 2] {
        let stats = http_get(&format!("{}/v1/stats", cluster.nodes[i].url))
            .await
            .1;
        let stats: serde_json::Value = serde_json::from_slice(&stats).unwrap();
        let suspected = &stats["suspected"][&cluster.nodes[0].id];
        assert!(suspected.is_number(), "node {i} suspects node 0: {stats}");
        let group = cluster.nodes[i].group("g").stats();
        assert!(group.peer_errors > 0, "node {i} found node 0 unreachable");
        failovers += group.failover_gets;
    }
    assert!(
        failovers as usize >= orphaned.len(),
        "gets of node 0's keys went to the member that would own them ({failovers})"
    );

    // The source changes while node 0 is down; node 0 comes back. Once the survivors'
    // probes find it (within the back-off, at most a few seconds here), they drop the
    // copies of its keys and read them from it: the new values, well before the hot
    // TTL (10 s) would have let the copies expire.
    for key in &orphaned {
        db.write(key, Some(&format!("new:{key}")));
    }
    let restarted = Instant::now();
    cluster.restart(0, db_group(&db)).await;
    'wait: loop {
        assert!(
            restarted.elapsed() < Duration::from_secs(8),
            "survivors still serve copies of node 0's keys"
        );
        for key in &orphaned {
            for i in [1, 2] {
                if get(&cluster.nodes[i].url, key).await.1 != format!("new:{key}") {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue 'wait;
                }
            }
        }
        break;
    }
    for i in [1, 2] {
        let stats = http_get(&format!("{}/v1/stats", cluster.nodes[i].url))
            .await
            .1;
        let stats: serde_json::Value = serde_json::from_slice(&stats).unwrap();
        assert_eq!(
            stats["suspected"],
            serde_json::json!({}),
            "node {i}: {stats}"
        );
    }
}

/// A stopped process (SIGSTOP) accepts connections and answers nothing. Reads of its
/// keys are answered within the client's deadline by the local fallback; once it is
/// suspected they are answered at once, and writes through the other owners no longer
/// wait a second for its invalidation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_member_is_treated_like_a_dead_one() {
    let grpc: Vec<String> = free_ports::<3>()
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let peers = grpc.join(",");
    let mut nodes = Vec::new();
    let mut urls = Vec::new();
    for addr in &grpc {
        let args = [
            "--group",
            "g",
            "--source",
            "demo",
            "--hot-second-fetch",
            "false",
        ];
        let (node, url) =
            common::start_serve(&[&args[..], &["--grpc-addr", addr, "--peers", &peers]].concat())
                .await;
        nodes.push(node);
        urls.push(url);
    }
    let ring = Ring::new(
        grpc.iter().map(|id| Member::new(id, id)),
        peercache::ring::DEFAULT_VNODES,
    );
    let owned_by = |i: usize| -> Vec<String> {
        (0..400)
            .map(|n| format!("k{n}"))
            .filter(|k| ring.owner(k).unwrap().id == grpc[i])
            .take(20)
            .collect()
    };
    let (stalled_keys, writer_keys) = (owned_by(2), owned_by(0));
    // Node 0 reads a few of node 2's keys first, so its connection to node 2 is up.
    for key in &stalled_keys[..3] {
        assert_eq!(get(&urls[0], key).await.0, 200);
    }
    nodes[2].signal("STOP");

    // The first read of a stalled member's key waits for the connection to be found
    // dead, then loads here, within the 10 s default deadline.
    let first = Instant::now();
    let (status, body) = get(&urls[0], &stalled_keys[3]).await;
    assert_eq!(status, 200, "{body}");
    assert!(first.elapsed() < Duration::from_secs(10));
    // Suspected now: every other key of it is loaded here without waiting for it.
    let mut slowest = Duration::ZERO;
    for key in &stalled_keys[4..] {
        let started = Instant::now();
        let (status, body) = get(&urls[0], key).await;
        assert_eq!(status, 200, "{body}");
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(900),
        "a read of a suspected member's key waited {slowest:?}"
    );
    // Writes through node 0 of its own keys, for 3.5 s: node 2's invalidation fails at
    // once, and when a suspicion period ends the one that probes it is not waited for.
    let client = reqwest::Client::new();
    let mut slowest = Duration::ZERO;
    let (writing, mut writes) = (Instant::now(), 0);
    while writing.elapsed() < Duration::from_millis(3500) {
        let key = &writer_keys[writes % writer_keys.len()];
        let started = Instant::now();
        let r = client
            .put(format!("{}/v1/groups/g/keys/{key}", urls[0]))
            .body("written")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        slowest = slowest.max(started.elapsed());
        writes += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        slowest < Duration::from_millis(300),
        "of {writes} writes, one waited {slowest:?} for the suspected member's invalidation"
    );
    nodes[2].signal("CONT");
}

/// With a static membership a dead member stays in the ring, suspected. Each of its
/// keys is loaded by the member next to it on the ring and kept there up to the hot TTL
/// by default, so it is loaded again every hot TTL for as long as the member is dead;
/// with a longer suspected TTL (`--suspect-copy-ttl`), about once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longer_suspect_copy_ttl_stops_the_loads_of_a_dead_owners_keys() {
    let hot_ttl = Duration::from_millis(500);
    let mut loads = vec![];
    for suspected_ttl in [None, Some(Duration::from_secs(3600))] {
        let db = Db::default();
        let setup = |_, reg: &peercache::Registry| {
            reg.group("g")
                .capacity(4 << 20)
                .hot(peercache::HotConfig {
                    ttl: hot_ttl,
                    suspected_ttl,
                    ..peercache::HotConfig::default()
                })
                .timeout(Duration::from_secs(5))
                .loader(db.clone())
                .build()
                .unwrap();
        };
        let mut cluster = Cluster::start(3, setup).await;
        let orphaned: Vec<String> = (0..90)
            .map(|i| format!("k{i}"))
            .filter(|k| cluster.owner(k) == 0)
            .collect();
        cluster.nodes[0].stop().await;
        let v = |key: &str| format!("v:{key}");
        read_for(&cluster, &[1, 2], &orphaned, Duration::from_secs(4), v).await;
        let n = orphaned.len() as u64;
        loads.push((orphaned.iter().map(|k| db.loads(k)).sum::<u64>(), n));
    }
    let [(bounded, n), (kept, m)] = loads[..] else {
        unreachable!()
    };
    // 4 s is 8 hot TTLs: every key loaded several times. Keys loaded before the member
    // next to them suspected the dead one are kept the 1 s fallback TTL and loaded once
    // more.
    assert!(bounded >= 4 * n, "{bounded} loads of {n} keys by default");
    assert!(
        kept <= 2 * m,
        "{kept} loads of {m} keys with a 1 h suspect TTL"
    );
    eprintln!(
        "read for 4 s: {bounded} loads of {n} orphaned keys by default, {kept} of {m} with a 1 h suspect TTL"
    );
}
