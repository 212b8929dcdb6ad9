//! Routing, in the style of groupcache's `TestPeers`: groups wired to in-process fake
//! peers (no sockets) that record every call, so each test says exactly which member
//! was asked for what.

#[path = "common/in_process.rs"]
mod in_process;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use in_process::{Call, InProcess};
use peercache::{Error, HotConfig};

const NODES: [&str; 3] = ["a", "b", "c"];

fn cluster() -> InProcess {
    InProcess::new(&NODES, |g| g)
}

/// Every copy fetched from an owner is kept, so only invalidations keep reads fresh.
fn cluster_keeping_copies() -> InProcess {
    InProcess::new(&NODES, |g| {
        g.hot(HotConfig {
            ttl: Duration::from_secs(3600),
            fill_ratio: 1.0,
            ..HotConfig::default()
        })
    })
}

#[tokio::test]
async fn a_get_asks_the_keys_owner_once_and_only_the_owner_loads() {
    let c = cluster();
    let keys: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
    let mut owners = BTreeSet::new();
    for key in &keys {
        let owner = c.owner_in_view_of("a", key);
        owners.insert(owner.clone());
        for node in NODES {
            assert_eq!(c.group(node).get(key).await.unwrap(), format!("v:{key}"));
            let calls = c.take_calls();
            // The owner answers from its own cache; a copy is kept on the second fetch
            // (the doorkeeper), so the first fetch of each node is always a call.
            if node == owner {
                assert!(calls.is_empty(), "{node} owns {key}: {calls:?}");
            } else {
                assert_eq!(calls, [Call::new(node, &owner, "get", key)]);
            }
        }
        for node in NODES {
            let want = u64::from(node == owner);
            assert_eq!(c.loads(node, key), want, "loads of {key} on {node}");
        }
        assert!(c.group(&owner).holds(key));
    }
    assert_eq!(owners.len(), 3, "the keys spread over every member");
    let s = c.group("a").stats();
    assert_eq!(s.peer_errors, 0);
}

#[tokio::test]
async fn a_peers_request_is_never_forwarded_even_when_views_differ() {
    let c = cluster();
    // a thinks b owns the key; b, seeing only b and c, thinks c does.
    c.view("a", &["a", "b"]);
    c.view("b", &["b", "c"]);
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| c.owner_in_view_of("a", k) == "b" && c.owner_in_view_of("b", k) == "c")
        .unwrap();
    assert_eq!(c.group("a").get(&key).await.unwrap(), format!("v:{key}"));
    assert_eq!(c.take_calls(), [Call::new("a", "b", "get", &key)]);
    assert_eq!(c.loads("b", &key), 1, "b loads it itself");
    assert_eq!(c.loads("c", &key), 0, "b never asked c");
    assert!(
        !c.group("b").holds(&key),
        "b keeps a key it does not own only briefly"
    );
    assert_eq!(c.group("b").stats().served_to_peers, 1);
}

/// A key `owner` owns while every node is up, and `next` would own without it.
fn key_of_then(c: &InProcess, owner: &str, next: &str) -> String {
    let rest = NODES.iter().filter(|n| **n != owner);
    let without = peercache::Ring::new(
        rest.map(|id| peercache::Member::new(*id, format!("{id}:7000"))),
        peercache::ring::DEFAULT_VNODES,
    );
    (0..)
        .map(|i| format!("key{i}"))
        .find(|k| {
            NODES.iter().all(|v| c.owner_in_view_of(v, k) == owner)
                && without.owner(k).is_some_and(|m| m.id == next)
        })
        .expect("some key")
}

#[tokio::test]
async fn an_unreachable_owner_is_counted_and_loaded_around() {
    let c = cluster();
    // a would own it without b: it loads the key itself.
    let key = key_of_then(&c, "b", "a");
    c.set_down("b", true);
    assert_eq!(c.group("a").get(&key).await.unwrap(), format!("v:{key}"));
    assert_eq!(c.take_calls(), [Call::new("a", "b", "get", &key)]);
    assert_eq!((c.loads("a", &key), c.loads("b", &key)), (1, 0));
    assert!(!c.group("a").holds(&key), "kept in the hot cache only");
    let s = c.group("a").stats();
    assert_eq!((s.peer_errors, s.peer_loads, s.loads), (1, 0, 1));
    // Kept briefly: the next get is a hit, and the owner is not asked meanwhile.
    assert_eq!(c.group("a").get(&key).await.unwrap(), format!("v:{key}"));
    assert!(c.take_calls().is_empty());
    // A write needs the owner: refused while it is down, and nothing stale stays here.
    let refused = c.group("a").set(&key, Bytes::from("new"), None).await;
    assert!(matches!(refused, Err(Error::Unavailable(_))), "{refused:?}");
    assert_eq!(c.take_calls(), [Call::new("a", "b", "set", &key)]);
    c.set_down("b", false);
    assert_eq!(c.group("a").get(&key).await.unwrap(), format!("v:{key}"));
    assert_eq!(c.take_calls(), [Call::new("a", "b", "get", &key)]);
}

#[tokio::test]
async fn writes_go_to_the_owner_which_invalidates_every_other_copy() {
    let c = cluster_keeping_copies();
    let key = c.key_owned_by("b", &["a", "b", "c"]);
    for node in ["a", "c"] {
        c.group(node).get(&key).await.unwrap();
    }
    c.take_calls();
    let version = c
        .group("a")
        .set(&key, Bytes::from("new"), None)
        .await
        .unwrap();
    assert!(version > 0);
    let calls = c.take_calls();
    assert_eq!(calls[0], Call::new("a", "b", "set", &key), "{calls:?}");
    let invalidated: BTreeSet<_> = calls[1..].iter().cloned().collect();
    let want = [
        Call::new("b", "a", "invalidate", &key),
        Call::new("b", "c", "invalidate", &key),
    ];
    assert_eq!(invalidated, BTreeSet::from(want), "{calls:?}");
    for node in NODES {
        assert_eq!(c.group(node).get(&key).await.unwrap(), "new", "on {node}");
    }
    // a dropped its copy and asks again; the owner answers from its main cache.
    assert_eq!(
        c.loads("b", &key),
        1,
        "the set value is served, not reloaded"
    );
    let removed = c.group("c").remove(&key).await.unwrap();
    assert!(removed > version);
    for node in NODES {
        assert_eq!(c.group(node).get(&key).await.unwrap(), format!("v:{key}"));
    }
    assert_eq!(
        c.loads("b", &key),
        2,
        "after a remove the owner loads again"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_gets_of_a_key_make_one_peer_call() {
    let c = cluster();
    c.set_latency(Duration::from_millis(50));
    let key = c.key_owned_by("b", &["a"]);
    let a = c.group("a");
    let values = join_all((0..100).map(|_| a.get(&key))).await;
    assert!(
        values
            .iter()
            .all(|v| v.as_deref() == Ok(format!("v:{key}").as_bytes()))
    );
    assert_eq!(c.take_calls(), [Call::new("a", "b", "get", &key)]);
    assert_eq!(c.loads("b", &key), 1);
    let s = a.stats();
    assert_eq!((s.peer_loads, s.loads_deduped), (1, 99));
}

#[tokio::test]
async fn a_member_new_to_a_view_gets_recent_writes_replayed() {
    let c = cluster_keeping_copies();
    // b does not see c yet; c holds a copy of a key b owns in every view.
    c.view("b", &["a", "b"]);
    let key = c.key_owned_by("b", &["a", "b", "c"]);
    c.group("c").get(&key).await.unwrap();
    c.group("c").get(&key).await.unwrap();
    c.group("a")
        .set(&key, Bytes::from("new"), None)
        .await
        .unwrap();
    let calls = c.take_calls();
    assert!(!calls.iter().any(|call| call.to == "c"), "{calls:?}");
    assert_ne!(
        c.group("c").get(&key).await.unwrap(),
        "new",
        "c missed the write"
    );
    // b sees c appear and replays its recent writes to it.
    let added = c.view("b", &NODES);
    assert_eq!(added.len(), 1);
    assert_eq!(c.registry("b").replay_writes(&added).await, 0);
    assert_eq!(c.take_calls(), [Call::new("b", "c", "invalidate", &key)]);
    assert_eq!(c.group("c").get(&key).await.unwrap(), "new");
}

#[tokio::test(start_paused = true)]
async fn invalidations_outlive_a_cancelled_write_and_the_registry_drains_them() {
    let c = cluster_keeping_copies();
    let key = c.key_owned_by("b", &["a", "b"]);
    c.group("a").get(&key).await.unwrap();
    c.set_call_latency(Duration::from_millis(100));
    // The writer gives up while the owner's invalidations are on their way.
    let owner = c.group("b");
    let write = owner.set(&key, Bytes::from("new"), None);
    let gave_up = tokio::time::timeout(Duration::from_millis(10), write).await;
    assert!(gave_up.is_err());
    let started = tokio::time::Instant::now();
    c.registry("b").drain().await;
    assert!(
        started.elapsed() >= Duration::from_millis(80),
        "drain waited"
    );
    c.set_call_latency(Duration::ZERO);
    c.take_calls();
    assert_eq!(
        c.group("a").get(&key).await.unwrap(),
        "new",
        "a's copy was dropped"
    );
    assert_eq!(c.take_calls(), [Call::new("a", "b", "get", &key)]);
}

#[tokio::test]
async fn after_a_view_change_a_node_drops_the_keys_it_no_longer_owns() {
    let c = cluster();
    // b sees only itself, so it owns a key that c owns in the full view.
    c.view("b", &["b"]);
    let key = c.key_owned_by("c", &["a"]);
    c.group("b").get(&key).await.unwrap();
    assert!(c.group("b").holds(&key));
    assert_eq!(c.registry("b").drop_unowned(), 0, "b still owns it");
    c.view("b", &NODES);
    assert_eq!(c.registry("b").drop_unowned(), 1);
    assert!(!c.group("b").holds(&key));
}

/// A node that has not joined yet (it knows no members) can still be asked by a peer
/// whose view names it. It answers, but keeps nothing in its main cache: the owners in
/// the other nodes' views do not send it invalidations, so a copy kept there would be
/// served, however stale, once it joins and owns the key. (Soak: swarm seed 187.)
#[tokio::test]
async fn a_node_that_has_not_joined_keeps_nothing_it_loads_for_a_peer() {
    let c = cluster();
    let key = c.key_owned_by("b", &["a"]);
    c.view("b", &[]);
    assert_eq!(c.group("a").get(&key).await.unwrap(), format!("v:{key}"));
    assert_eq!(
        c.loads("b", &key),
        1,
        "b answered a's get by loading the key"
    );
    assert!(
        !c.group("b").holds(&key),
        "b kept it in its main cache before joining"
    );
    c.view("b", &NODES);
    assert_eq!(c.registry("b").drop_unowned(), 0);
    assert!(!c.group("b").holds(&key));
}

#[tokio::test]
async fn the_keys_of_an_unreachable_owner_are_loaded_once_by_the_next_member() {
    let c = cluster();
    let key = key_of_then(&c, "b", "c");
    c.set_down("b", true);
    for node in ["a", "c", "a"] {
        assert_eq!(c.group(node).get(&key).await.unwrap(), format!("v:{key}"));
    }
    let calls = c.take_calls();
    assert_eq!(
        calls,
        [
            Call::new("a", "b", "get", &key),
            Call::new("a", "c", "relay", &key),
            Call::new("c", "b", "get", &key),
            Call::new("a", "b", "get", &key),
            Call::new("a", "c", "relay", &key),
        ],
        "a asks c, which would own the key without b; c cannot reach b either, loads \
         the key and then answers from its copy"
    );
    assert_eq!(
        (c.loads("a", &key), c.loads("b", &key), c.loads("c", &key)),
        (0, 0, 1),
        "loaded once, by c"
    );
    let a = c.group("a").stats();
    assert_eq!((a.failover_gets, a.peer_errors, a.loads), (2, 2, 0));
    // c keeps it as a key it does not own: briefly, in its hot cache.
    assert!(!c.group("c").holds(&key));
    // When c is unreachable too, a loads the key itself.
    c.set_down("c", true);
    c.group("a").sweep();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(c.group("a").get(&key).await.unwrap(), format!("v:{key}"));
    assert_eq!(c.loads("a", &key), 1);
}

#[tokio::test]
async fn a_member_that_reaches_the_owner_asks_it_for_one_that_does_not() {
    let c = cluster();
    let key = key_of_then(&c, "b", "c");
    // a's call to b fails (a cut off from b); c still reaches b.
    c.fail_next("b", 1);
    assert_eq!(c.group("a").get(&key).await.unwrap(), format!("v:{key}"));
    assert_eq!(
        c.take_calls(),
        [
            Call::new("a", "b", "get", &key),
            Call::new("a", "c", "relay", &key),
            Call::new("c", "b", "get", &key),
        ]
    );
    assert_eq!(
        (c.loads("a", &key), c.loads("b", &key), c.loads("c", &key)),
        (0, 1, 0),
        "loaded by its owner only"
    );
    assert_eq!(c.group("a").stats().failover_gets, 1);
    assert_eq!(c.group("c").stats().relayed_gets, 1);
    // A relayed get is not relayed again: b, asked by c, answers as the owner.
    assert_eq!(c.group("b").stats().served_to_peers, 1);
}
