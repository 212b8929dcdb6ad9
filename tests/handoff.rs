//! Handoff through membership changes (src/group/handoff.rs), over in-process fake
//! peers: a node joining takes the keys that move to it from their previous owners'
//! memory, a node leaving pushes its entries to their new owners, and neither ever
//! serves a value older than a write.

#[path = "common/in_process.rs"]
mod in_process;

use std::time::Duration;

use in_process::InProcess;

const WINDOW: Duration = Duration::from_secs(30);
const KEYS: usize = 300;

fn keys() -> Vec<String> {
    keys_up_to(KEYS)
}

fn keys_up_to(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("key{i}")).collect()
}

/// Nodes a, b and c with handoff on; a and b form the cluster, c is not in it yet.
fn two_of_three() -> InProcess {
    InProcess::with_handoff(&["a", "b", "c"], &["a", "b"], WINDOW, |g| g)
}

/// c joins: every view has it, and a and b move what they no longer own aside, as a
/// node following the membership does.
fn c_joins(cluster: &InProcess) {
    for node in ["a", "b", "c"] {
        cluster.view(node, &["a", "b", "c"]);
        cluster.registry(node).drop_unowned();
    }
}

/// Gets every key through `node`, checking the values.
async fn read_all(cluster: &InProcess, node: &str) {
    read(cluster, node, &keys()).await;
}

async fn read(cluster: &InProcess, node: &str, keys: &[String]) {
    for key in keys {
        let value = cluster.group(node).get(key).await.unwrap();
        assert_eq!(value, format!("v:{key}"), "{key} through {node}");
    }
}

fn loads_on(cluster: &InProcess, node: &str, keys: &[String]) -> u64 {
    keys.iter().map(|k| cluster.loads(node, k)).sum()
}

#[tokio::test]
async fn a_joiner_takes_the_keys_that_move_to_it_from_their_previous_owners() {
    let cluster = two_of_three();
    read_all(&cluster, "a").await;
    c_joins(&cluster);
    let moved: Vec<String> = (keys().into_iter())
        .filter(|k| cluster.owner_in_view_of("a", k) == "c")
        .collect();
    assert!(moved.len() > KEYS / 5, "{} keys moved", moved.len());
    let held: u64 = ["a", "b"]
        .iter()
        .map(|n| cluster.group(n).stats().store.items)
        .sum();
    assert_eq!(
        held as usize,
        KEYS - moved.len(),
        "moved keys left main caches"
    );
    cluster.take_calls();
    read_all(&cluster, "c").await;
    read_all(&cluster, "a").await;
    read_all(&cluster, "b").await;
    assert_eq!(
        loads_on(&cluster, "c", &moved),
        0,
        "no moved key loaded again"
    );
    let all: u64 = ["a", "b", "c"]
        .iter()
        .map(|n| loads_on(&cluster, n, &keys()))
        .sum();
    assert_eq!(all as usize, KEYS, "each key loaded once, before the join");
    let stats = cluster.group("c").stats();
    assert_eq!(stats.handoff_hits as usize, moved.len());
    assert_eq!(
        cluster.group("c").cached_ttl(&moved[0]),
        Some(None),
        "no expiry added"
    );
    assert_eq!(
        stats.handoff_peeks as usize,
        moved.len(),
        "one peek per moved key"
    );
    let peeks = cluster.take_calls().into_iter().filter(|c| c.op == "peek");
    assert!(
        peeks.clone().all(|c| c.from == "c"),
        "only the new owner peeks"
    );
    assert_eq!(peeks.count(), moved.len());
}

/// a and b read every key, then c joins; a key that a loaded and c owns now.
async fn warm_then_c_joins() -> (InProcess, String) {
    let cluster = two_of_three();
    read_all(&cluster, "a").await;
    c_joins(&cluster);
    let key = (keys().into_iter())
        .find(|k| cluster.owner_in_view_of("a", k) == "c" && cluster.loads("a", k) == 1)
        .expect("a key a owned moved to c");
    (cluster, key)
}

#[tokio::test]
async fn a_handed_entry_is_refused_after_a_write_its_holder_missed() {
    let (cluster, key) = warm_then_c_joins().await;
    // a does not hear of the removal: it still holds the value aside.
    cluster.set_down("a", true);
    cluster.group("c").remove(&key).await.unwrap();
    cluster.set_down("a", false);
    let held = cluster.group("a").peek_for_peer(&key, "c").unwrap();
    assert_eq!(
        held.map(|f| f.value),
        Some(format!("v:{key}").into()),
        "a still holds the old entry"
    );
    cluster.group("c").get(&key).await.unwrap();
    assert_eq!(cluster.loads("c", &key), 1, "loaded, not taken from a");
    assert_eq!(cluster.group("c").stats().handoff_hits, 0);
}

#[tokio::test]
async fn a_write_drops_a_handed_entry_on_its_way() {
    let (cluster, key) = warm_then_c_joins().await;
    // Through b, whose view still has a as the owner: a applies it and its entry aside
    // is replaced; c is told to drop what it has.
    cluster.view("b", &["a", "b"]);
    cluster
        .group("b")
        .set(&key, "new".into(), None)
        .await
        .unwrap();
    let value = cluster.group("c").get(&key).await.unwrap();
    assert_eq!(
        value, "new",
        "the peek finds the written value, not the old one"
    );
}

#[tokio::test]
async fn a_leaver_pushes_its_entries_and_the_new_owners_need_no_load() {
    let cluster = InProcess::with_handoff(&["a", "b", "c"], &["a", "b", "c"], WINDOW, |g| g);
    read_all(&cluster, "a").await;
    let theirs: Vec<String> = (keys().into_iter())
        .filter(|k| cluster.owner_in_view_of("a", k) == "c")
        .collect();
    let (sent, kept) = cluster
        .registry("c")
        .hand_off_all(Duration::from_secs(5))
        .await;
    assert_eq!((sent, kept), (theirs.len(), theirs.len()));
    // A write after the push, still through c as the owner, drops the pushed entry.
    let written = &theirs[0];
    cluster.group("a").remove(written).await.unwrap();
    for node in ["a", "b"] {
        cluster.view(node, &["a", "b"]);
        cluster.registry(node).drop_unowned();
    }
    read_all(&cluster, "a").await;
    read_all(&cluster, "b").await;
    let reloaded = loads_on(&cluster, "a", &theirs) + loads_on(&cluster, "b", &theirs);
    assert_eq!(
        reloaded, 1,
        "only the key written after the push is loaded again"
    );
    let accepted: u64 = ["a", "b"]
        .iter()
        .map(|n| cluster.group(n).stats().handoff_accepted)
        .sum();
    assert_eq!(accepted as usize, theirs.len());
    // Kept as they were (no TTL here): the handoff window is not their expiry.
    let taken = &theirs[1];
    let owner = cluster.owner_in_view_of("a", taken);
    assert_eq!(
        cluster.group(&owner).cached_ttl(taken),
        Some(None),
        "{taken} at {owner}"
    );
    assert_eq!(
        cluster.group("c").stats().handoff_pushed as usize,
        theirs.len()
    );
}

#[tokio::test]
async fn a_push_with_an_entry_over_the_limits_is_refused_whole() {
    let cluster = InProcess::with_handoff(&["a", "b"], &["a", "b"], WINDOW, |g| g.max_value_len(8));
    let entry = |value: &str, version| peercache::peer::Fetched {
        value: value.to_owned().into(),
        version,
        expires_in: None,
        hot: false,
        packed: None,
    };
    let g = cluster.group("a");
    let refused = g.accept_pushed(vec![
        ("ok".into(), entry("small", 1)),
        ("big".into(), entry("far too large", 1)),
    ]);
    assert!(
        matches!(refused, Err(peercache::Error::ValueTooLarge { .. })),
        "{refused:?}"
    );
    let refused = g.accept_pushed(vec![("k".into(), entry("v", u64::MAX))]);
    assert!(
        matches!(refused, Err(peercache::Error::Invalid(_))),
        "{refused:?}"
    );
    assert_eq!(
        g.peek_for_peer("ok", "b").unwrap(),
        None,
        "nothing of it kept"
    );
}

#[tokio::test]
async fn a_cluster_starting_cold_stops_asking_after_a_run_of_misses() {
    let cluster = two_of_three();
    c_joins(&cluster);
    // Nothing was read before: every peek finds nothing.
    let keys = keys_up_to(1200);
    read(&cluster, "c", &keys).await;
    let peeks = cluster
        .take_calls()
        .into_iter()
        .filter(|c| c.op == "peek")
        .count();
    let owned = (keys.iter())
        .filter(|k| cluster.owner_in_view_of("c", k) == "c")
        .count();
    assert!(owned > 256, "{owned} keys owned by c");
    assert_eq!(peeks, 256, "asks stop after 256 misses in a row");
}

/// A member that comes back (it lost its registration, or restarted) may have owned
/// keys in its own view meanwhile and taken writes the others never heard of, and the
/// others may hold values from that time: for the handoff window nothing is handed in
/// either direction, and entries that move are dropped as without handoff.
#[tokio::test]
async fn nothing_is_handed_for_the_window_after_a_member_comes_back() {
    let cluster = InProcess::with_handoff(&["a", "b", "c"], &["a", "b", "c"], WINDOW, |g| g);
    // c drops out of a's and b's views for a while; they take over its keys.
    for node in ["a", "b"] {
        cluster.view(node, &["a", "b"]);
        cluster.registry(node).drop_unowned();
    }
    read_all(&cluster, "a").await;
    let theirs: Vec<String> = (keys().into_iter())
        .filter(|k| cluster.owner_in_view_of("c", k) == "c")
        .collect();
    // Before a sees c return, it answers a member it never saw, not c.
    let held_by_a = (keys().into_iter())
        .find(|k| cluster.group("a").holds(k))
        .unwrap();
    let a = cluster.group("a");
    assert!(
        a.peek_for_peer(&held_by_a, "d").unwrap().is_some(),
        "a new member"
    );
    assert_eq!(
        a.peek_for_peer(&held_by_a, "c").unwrap(),
        None,
        "one seen before"
    );
    // c is back: a and b see it return.
    for node in ["a", "b"] {
        cluster.view(node, &["a", "b", "c"]);
        cluster.registry(node).drop_unowned();
        assert!(!cluster.picker(node).handoff_allowed(), "{node}");
    }
    let aside: u64 = ["a", "b"]
        .iter()
        .map(|n| {
            cluster
                .group(n)
                .peek_for_peer(&theirs[0], "c")
                .unwrap()
                .is_some() as u64
        })
        .sum();
    assert_eq!(aside, 0, "nothing answered to a peek");
    cluster.take_calls();
    read(&cluster, "c", &theirs).await;
    assert_eq!(
        loads_on(&cluster, "c", &theirs) as usize,
        theirs.len(),
        "all loaded"
    );
    assert_eq!(cluster.group("c").stats().handoff_hits, 0);
    let (sent, kept) = cluster
        .registry("a")
        .hand_off_all(Duration::from_secs(1))
        .await;
    assert_eq!((sent, kept), (0, 0), "no push either");
}

/// Versions are stamped per owner: a previous owner's entry may carry a higher version
/// than a write its new owner applied since. The new owner must still refuse it.
#[tokio::test]
async fn a_handed_entry_with_a_higher_version_than_a_later_write_is_refused() {
    let cluster = two_of_three();
    // A key a owns now and c will own; written several times through a, so a's
    // version of it is well above what c will stamp.
    let key = (keys().into_iter())
        .find(|k| {
            cluster.owner_in_view_of("a", k) == "a" && {
                let ring = peercache::Ring::new(
                    ["a", "b", "c"].map(|id| peercache::Member::new(id, format!("{id}:7000"))),
                    peercache::ring::DEFAULT_VNODES,
                );
                ring.owner(k).unwrap().id == "c"
            }
        })
        .unwrap();
    for i in 0..10 {
        cluster
            .group("a")
            .set(&key, format!("old {i}").into(), None)
            .await
            .unwrap();
    }
    c_joins(&cluster);
    let held = cluster
        .group("a")
        .peek_for_peer(&key, "c")
        .unwrap()
        .unwrap();
    // a misses the removal's invalidation: its entry stays aside.
    cluster.set_down("a", true);
    let removed = cluster.group("c").remove(&key).await.unwrap();
    cluster.set_down("a", false);
    assert!(
        held.version > removed,
        "a's entry at {} is above c's write at {removed}",
        held.version
    );
    let value = cluster.group("c").get(&key).await.unwrap();
    assert_eq!(
        value,
        format!("v:{key}"),
        "loaded after the removal, not a's old entry"
    );
}

/// Peeks that fail (the previous owner unreachable) say nothing about whether entries
/// are there: they do not count towards the misses that end the window.
#[tokio::test]
async fn failed_peeks_do_not_end_the_window() {
    let cluster = two_of_three();
    let keys = keys_up_to(2400);
    read(&cluster, "a", &keys).await;
    c_joins(&cluster);
    let (first, second) = keys.split_at(1200);
    let cs = |ks: &[String]| -> Vec<String> {
        (ks.iter())
            .filter(|k| cluster.owner_in_view_of("c", k) == "c")
            .cloned()
            .collect()
    };
    let (first, second) = (cs(first), cs(second));
    assert!(first.len() > 256, "{} keys", first.len());
    // a and b unreachable: every peek of the first run fails.
    cluster.set_down("a", true);
    cluster.set_down("b", true);
    read(&cluster, "c", &first).await;
    assert_eq!(cluster.group("c").stats().handoff_hits, 0);
    cluster.set_down("a", false);
    cluster.set_down("b", false);
    read(&cluster, "c", &second).await;
    assert_eq!(
        cluster.group("c").stats().handoff_hits as usize,
        second.len(),
        "still asking after {} failed peeks",
        first.len()
    );
}

/// a, b and c in the cluster; c goes down and a reads `key` (c's) while it is, then c
/// leaves every view and `key` moves to a.
async fn a_loads_while_c_is_down_then_c_leaves() -> (InProcess, String) {
    let cluster = InProcess::with_handoff(&["a", "b", "c"], &["a", "b", "c"], WINDOW, |g| g);
    let key = (keys().into_iter())
        .find(|k| {
            cluster.owner_in_view_of("a", k) == "c" && {
                let after = InProcess::with_handoff(&["a", "b"], &["a", "b"], WINDOW, |g| g);
                after.owner_in_view_of("a", k) == "a"
            }
        })
        .expect("a key of c that moves to a");
    cluster.set_down("c", true);
    read(&cluster, "a", std::slice::from_ref(&key)).await;
    assert_eq!(cluster.loads("a", &key), 1, "loaded as a fallback");
    for node in ["a", "b"] {
        cluster.view(node, &["a", "b"]);
        cluster.registry(node).drop_unowned();
    }
    (cluster, key)
}

#[tokio::test]
async fn a_new_owner_keeps_the_copy_it_loaded_while_the_old_owner_was_down() {
    let (cluster, key) = a_loads_while_c_is_down_then_c_leaves().await;
    let group = cluster.group("a");
    let ttl_before = group.cached_ttl(&key);
    read(&cluster, "a", std::slice::from_ref(&key)).await;
    read(&cluster, "b", std::slice::from_ref(&key)).await;
    assert_eq!(cluster.loads("a", &key), 1, "not loaded again as its owner");
    assert_eq!(group.stats().copies_promoted, 1);
    assert_eq!(group.stats().handoff_hits, 0);
    // It lives no longer than the copy would have (the fallback TTL).
    let ttl = group.cached_ttl(&key).expect("cached").expect("an expiry");
    assert!(ttl <= Duration::from_secs(1), "{ttl:?}");
    assert!(matches!(ttl_before, Some(Some(before)) if ttl <= before));
}

/// A removal through the new owner leaves its main cache without the key: the next get
/// misses there and must load, not bring back the copy from before the removal.
#[tokio::test]
async fn a_copy_is_not_kept_as_owner_after_a_removal_through_the_new_owner() {
    let (cluster, key) = a_loads_while_c_is_down_then_c_leaves().await;
    cluster.group("b").remove(&key).await.unwrap();
    read(&cluster, "a", std::slice::from_ref(&key)).await;
    assert_eq!(
        cluster.loads("a", &key),
        2,
        "loaded again after the removal"
    );
    assert_eq!(cluster.group("a").stats().copies_promoted, 0);
}
