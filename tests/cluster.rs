//! Three real nodes on loopback: ownership, writes through any node, owner failure,
//! graceful shutdown.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, Db, db_group, http_get, keep_all_copies};
use peercache::{Loader, Result};
use tokio::sync::Semaphore;

async fn get(url: &str, key: &str) -> (u16, String) {
    let (status, body) = http_get(&format!("{url}/v1/groups/g/keys/{key}")).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn put(url: &str, key: &str, value: &str) -> u64 {
    let r = reqwest::Client::new()
        .put(format!("{url}/v1/groups/g/keys/{key}"))
        .body(value.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "PUT {key} through {url}");
    serde_json::from_slice::<serde_json::Value>(&r.bytes().await.unwrap()).unwrap()["version"]
        .as_u64()
        .unwrap()
}

async fn delete(url: &str, key: &str) -> u64 {
    let r = reqwest::Client::new()
        .delete(format!("{url}/v1/groups/g/keys/{key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "DELETE {key} through {url}");
    serde_json::from_slice::<serde_json::Value>(&r.bytes().await.unwrap()).unwrap()["version"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_is_loaded_once_cluster_wide() {
    let db = Db::default();
    let cluster = Cluster::start(3, |_, reg| {
        reg.group("demo")
            .capacity(4 << 20)
            .loader_arc(
                peercache::source::SourceSpec::Demo {
                    latency: Duration::from_millis(2),
                }
                .loader(),
            )
            .build()
            .unwrap();
        // The same shared database behind a second group, to count loads per key.
        reg.group("g")
            .capacity(4 << 20)
            .loader(db.clone())
            .build()
            .unwrap();
    })
    .await;
    let keys: Vec<String> = (0..100).map(|i| format!("key-{i}")).collect();
    for node in &cluster.nodes {
        for key in &keys {
            let url = format!("{}/api?group=demo&key={key}", node.url);
            let (status, body) = http_get(&url).await;
            assert_eq!(status, 200, "{url}");
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let expect = peercache::source::demo_value(key);
            assert_eq!(
                json["value"].as_str().unwrap().as_bytes(),
                &expect[..],
                "{url}"
            );
            assert_eq!(
                (json["group"].as_str(), json["key"].as_str()),
                (Some("demo"), Some(key.as_str()))
            );
            assert_eq!(get(&node.url, key).await, (200, format!("v:{key}")));
        }
    }
    let loads: u64 = cluster
        .nodes
        .iter()
        .map(|n| n.group("demo").stats().loads)
        .sum();
    assert_eq!(
        loads, 100,
        "each demo key loaded exactly once across the cluster"
    );
    for key in &keys {
        assert_eq!(db.loads(key), 1, "{key} loaded once from the shared db");
        let owner = cluster.owner(key);
        assert!(
            cluster.nodes[owner].group("demo").holds(key),
            "{key} in its owner's main cache"
        );
        for i in cluster.non_owners(key) {
            assert!(
                !cluster.nodes[i].group("demo").holds(key),
                "{key} not in non-owner {i}'s main cache"
            );
        }
    }
    // The stats endpoint reports the same counters.
    let mut from_http = 0;
    let mut peer_loads = 0;
    for node in &cluster.nodes {
        let (_, body) = http_get(&format!("{}/v1/stats", node.url)).await;
        let stats: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(stats["node"].as_str(), Some(node.id.as_str()));
        from_http += stats["groups"]["demo"]["loads"].as_u64().unwrap();
        peer_loads += stats["groups"]["demo"]["peer_loads"].as_u64().unwrap();
    }
    assert_eq!(from_http, 100);
    // Each key's two non-owners fetched it from its owner once (one read each).
    assert_eq!(peer_loads, 200, "non-owners fetched from owners");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_a_non_owner_are_read_everywhere() {
    let db = Db::default();
    let cluster = Cluster::start(3, db_group(&db)).await;
    let keys: Vec<String> = (0..12).map(|i| format!("w{i}")).collect();
    // Warm: every node holds the key, non-owners as hot copies.
    for key in &keys {
        for node in &cluster.nodes {
            assert_eq!(get(&node.url, key).await, (200, format!("v:{key}")));
        }
        for i in cluster.non_owners(key) {
            assert!(cluster.nodes[i].group("g").stats().hot.items > 0);
        }
    }
    for key in &keys {
        let writer = cluster.non_owners(key)[0];
        db.write(key, Some("new"));
        let version = put(&cluster.nodes[writer].url, key, "new").await;
        assert!(version > 0);
        for node in &cluster.nodes {
            assert_eq!(
                get(&node.url, key).await,
                (200, "new".to_owned()),
                "after Set, via {}",
                node.id
            );
        }
        db.write(key, None);
        let removed = delete(&cluster.nodes[writer].url, key).await;
        assert!(
            removed > version,
            "Remove's version {removed} follows Set's {version}"
        );
        for node in &cluster.nodes {
            let (status, _) = get(&node.url, key).await;
            assert_eq!(status, 404, "after Remove, via {}", node.id);
        }
    }
    for node in &cluster.nodes {
        assert_eq!(node.group("g").stats().invalidations_failed, 0);
    }
}

/// A loader that answers the db's value as of when it was *called*, after a gate opens.
struct SlowOld {
    db: Db,
    calls: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
}

#[async_trait::async_trait]
impl Loader for SlowOld {
    async fn load(&self, key: &str) -> Result<Bytes> {
        let value = self.db.load(key).await;
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.gate.acquire().await.expect("gate").forget();
        value
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_racing_a_set_never_wins() {
    let db = Db::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let cluster = Cluster::start(3, |_, reg| {
        reg.group("g")
            .capacity(4 << 20)
            .hot(keep_all_copies())
            .loader(SlowOld {
                db: db.clone(),
                calls: calls.clone(),
                gate: gate.clone(),
            })
            .build()
            .unwrap();
    })
    .await;
    let key = "raced";
    let others = cluster.non_owners(key);
    let (reader, writer) = (others[0], others[1]);
    // A read through one non-owner starts the owner's load, which reads the old value.
    let url = cluster.nodes[reader].url.clone();
    let read = tokio::spawn(async move { get(&url, key).await });
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // The writer updates the source, then the cache through the other non-owner.
    db.write(key, Some("new"));
    put(&cluster.nodes[writer].url, key, "new").await;
    // Now the old load completes: its caller may see the old value (it asked first) ...
    gate.add_permits(1);
    assert_eq!(read.await.unwrap(), (200, "v:raced".to_owned()));
    // ... but nothing cached it over the Set, on the owner or as a hot copy.
    for node in &cluster.nodes {
        assert_eq!(
            get(&node.url, key).await,
            (200, "new".to_owned()),
            "via {}",
            node.id
        );
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "no reload: the Set's value was served"
    );
    let owner = cluster.owner(key);
    assert!(
        cluster.nodes[owner]
            .group("g")
            .stats()
            .store
            .stale_rejections
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_owner_is_routed_around() {
    let db = Db::default();
    let mut cluster = Cluster::start(3, db_group(&db)).await;
    let keys: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
    let victim = 0;
    let orphaned: Vec<&String> = keys.iter().filter(|k| cluster.owner(k) == victim).collect();
    assert!(orphaned.len() >= 5, "node 0 owns some of 60 keys");
    cluster.nodes[victim].stop().await;
    for key in &orphaned {
        for i in [1, 2] {
            assert_eq!(
                get(&cluster.nodes[i].url, key).await,
                (200, format!("v:{key}")),
                "{key} via node {i}"
            );
        }
    }
    for i in [1, 2] {
        let stats = cluster.nodes[i].group("g").stats();
        assert!(
            stats.peer_errors >= 1,
            "node {i} counted the unreachable owner"
        );
        assert!(stats.loads >= 1, "node {i} loaded locally");
        // Kept briefly as hot copies, never in the main cache it does not own.
        for key in &orphaned {
            assert!(!cluster.nodes[i].group("g").holds(key));
        }
    }
    // Writes need the owner: a clear 503, and the other nodes keep serving.
    let r = reqwest::Client::new()
        .put(format!(
            "{}/v1/groups/g/keys/{}",
            cluster.nodes[1].url, orphaned[0]
        ))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(get(&cluster.nodes[2].url, "k1").await.0, 200);
}

/// A loader that takes a while, to have requests in flight at shutdown.
struct Slow;

#[async_trait::async_trait]
impl Loader for Slow {
    async fn load(&self, key: &str) -> Result<Bytes> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(Bytes::from(format!("slow:{key}")))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_requests_in_flight() {
    let mut cluster = Cluster::start(1, |_, reg| {
        reg.group("g")
            .capacity(1 << 20)
            .loader(Slow)
            .build()
            .unwrap();
    })
    .await;
    let url = cluster.nodes[0].url.clone();
    let in_flight = tokio::spawn(async move { get(&url, "x").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stopping = cluster.nodes[0].begin_stop();
    assert_eq!(in_flight.await.unwrap(), (200, "slow:x".to_owned()));
    stopping.await.unwrap().unwrap();
    assert!(
        reqwest::get(format!("{}/healthz", cluster.nodes[0].url))
            .await
            .is_err(),
        "stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_reconnect_to_a_restarted_owner() {
    let db = Db::default();
    let mut cluster = Cluster::start(3, db_group(&db)).await;
    let key = cluster.key_owned_by(0, "r");
    assert_eq!(get(&cluster.nodes[1].url, &key).await.0, 200);
    assert_eq!(cluster.nodes[1].group("g").stats().peer_loads, 1);
    cluster.nodes[0].stop().await;
    db.write(&key, Some("while down"));
    assert_eq!(
        get(&cluster.nodes[1].url, &key).await,
        (200, "v:".to_owned() + &key),
        "hot copy"
    );
    cluster.restart(0, db_group(&db)).await;
    // Once the copies are dropped (node 1's, and what the owner pushed to the others
    // when it stopped), node 1 asks the owner again over a fresh connection.
    for node in &cluster.nodes[1..] {
        node.group("g").invalidate(&key, 0).unwrap();
    }
    assert_eq!(
        get(&cluster.nodes[1].url, &key).await,
        (200, "while down".to_owned())
    );
    let stats = cluster.nodes[1].group("g").stats();
    assert_eq!(stats.peer_loads, 2, "fetched from the restarted owner");
    assert_eq!(stats.loads, 0, "never loaded locally");
}

/// A node stopped gracefully pushes its entries to their owners in the ring without
/// it; restarted within the handoff window, it takes them back instead of loading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_owner_takes_back_what_it_pushed_when_it_stopped() {
    let db = Db::default();
    let mut cluster = Cluster::start(3, db_group(&db)).await;
    // A key of node 0 that goes to node 2 without it.
    let without_0 = {
        let ids = [&cluster.nodes[1].id, &cluster.nodes[2].id];
        let members = ids.iter().map(|id| peercache::Member::new(*id, *id));
        peercache::Ring::new(members, peercache::ring::DEFAULT_VNODES)
    };
    let key = (0..)
        .map(|i| format!("w{i}"))
        .find(|k| cluster.owner(k) == 0 && without_0.owner(k).unwrap().id == cluster.nodes[2].id)
        .unwrap();
    assert_eq!(get(&cluster.nodes[1].url, &key).await.0, 200);
    cluster.nodes[0].stop().await;
    assert_eq!(cluster.nodes[2].group("g").stats().handoff_accepted, 1);
    cluster.restart(0, db_group(&db)).await;
    cluster.nodes[1].group("g").invalidate(&key, 0).unwrap();
    assert_eq!(
        get(&cluster.nodes[1].url, &key).await,
        (200, "v:".to_owned() + &key)
    );
    let owner = cluster.nodes[0].group("g").stats();
    assert_eq!(
        (owner.handoff_hits, owner.loads),
        (1, 0),
        "handed back, not loaded"
    );
    assert_eq!(db.loads(&key), 1, "loaded once, before the restart");
}

/// A loader slower than any caller waits.
struct Stuck;

#[async_trait::async_trait]
impl Loader for Stuck {
    async fn load(&self, _key: &str) -> Result<Bytes> {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(Bytes::from_static(b"late"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_deadline_travels_to_the_owner() {
    let cluster = Cluster::start(2, |_, reg| {
        reg.group("g")
            .capacity(1 << 20)
            .timeout(Duration::from_millis(300))
            .loader(Stuck)
            .build()
            .unwrap();
    })
    .await;
    let key = cluster.key_owned_by(0, "d");
    let started = std::time::Instant::now();
    let (status, body) = get(&cluster.nodes[1].url, &key).await;
    let took = started.elapsed();
    assert_eq!(status, 504, "{body}");
    assert!(
        took < Duration::from_secs(3),
        "gave up at the deadline, not the loader's 30 s: {took:?}"
    );
    let asker = cluster.nodes[1].group("g").stats();
    assert_eq!(
        asker.loads, 0,
        "a slow owner is not an unreachable one: no local load"
    );
    let owner = cluster.nodes[0].group("g").stats();
    assert_eq!((owner.served_to_peers, owner.loads), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_fetched_twice_gets_a_hot_copy() {
    let db = Db::default();
    let cluster = Cluster::start(2, |_, reg| {
        // The defaults: no random fills, keep on the second fetch.
        reg.group("g")
            .capacity(4 << 20)
            .loader(db.clone())
            .build()
            .unwrap();
    })
    .await;
    let key = cluster.key_owned_by(0, "h");
    let asker = &cluster.nodes[1];
    for expect_peer_loads in [1, 2, 2, 2] {
        assert_eq!(get(&asker.url, &key).await, (200, format!("v:{key}")));
        assert_eq!(asker.group("g").stats().peer_loads, expect_peer_loads);
    }
    let stats = asker.group("g").stats();
    assert_eq!((stats.hot_hits, stats.hot.items), (2, 1));
    // A key fetched once takes no room.
    let once = cluster.key_owned_by(0, "o");
    assert_eq!(get(&asker.url, &once).await.0, 200);
    assert_eq!(asker.group("g").stats().hot.items, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_former_owner_drops_its_copy_when_the_key_moves() {
    let db = Db::default();
    let cluster = Cluster::start(3, db_group(&db)).await;
    let members = |n: usize| -> Vec<peercache::Member> {
        cluster.nodes[..n]
            .iter()
            .map(|node| peercache::Member::new(node.id.clone(), node.id.clone()))
            .collect()
    };
    let set_view = |n: usize| {
        for node in &cluster.nodes {
            let mut view = members(n);
            if !view.iter().any(|m| m.id == node.id) {
                view.push(peercache::Member::new(node.id.clone(), node.id.clone()));
            }
            node.groups.peers().unwrap().set_members(view);
        }
    };
    // Nodes 0 and 1 see only each other; pick a key node 0 owns there and node 2 owns
    // once it joins.
    set_view(2);
    let two = peercache::Ring::new(members(2), peercache::ring::DEFAULT_VNODES);
    let three = peercache::Ring::new(members(3), peercache::ring::DEFAULT_VNODES);
    let key = (0..)
        .map(|i| format!("m{i}"))
        .find(|k| {
            two.owner(k).unwrap().id == cluster.nodes[0].id
                && three.owner(k).unwrap().id == cluster.nodes[2].id
        })
        .unwrap();
    // Several writes through node 1 give node 0's main copy a high version.
    for i in 0..5 {
        let value = format!("old{i}");
        db.write(&key, Some(&value));
        put(&cluster.nodes[1].url, &key, &value).await;
    }
    assert_eq!(
        get(&cluster.nodes[0].url, &key).await,
        (200, "old4".to_owned())
    );
    // Node 2 joins and owns the key; its first write has a low version of its own.
    set_view(3);
    db.write(&key, Some("new"));
    put(&cluster.nodes[1].url, &key, "new").await;
    for node in &cluster.nodes {
        assert_eq!(
            get(&node.url, &key).await,
            (200, "new".to_owned()),
            "via {}",
            node.id
        );
    }
    assert!(
        !cluster.nodes[0].group("g").holds(&key),
        "the former owner let go"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_cross_the_peer_link() {
    let db = Db::default();
    let cluster = Cluster::start(2, |_, reg| {
        reg.group("g")
            .capacity(64 << 20)
            .max_value_len(8 << 20)
            .loader(db.clone())
            .build()
            .unwrap();
    })
    .await;
    let key = cluster.key_owned_by(0, "big");
    let value = "x".repeat(5 << 20);
    put(&cluster.nodes[1].url, &key, &value).await;
    let (status, body) = get(&cluster.nodes[1].url, &key).await;
    assert_eq!((status, body.len()), (200, value.len()));
    let stats = cluster.nodes[1].group("g").stats();
    assert_eq!(
        (stats.peer_loads, stats.peer_errors, stats.loads),
        (1, 0, 0)
    );
}
