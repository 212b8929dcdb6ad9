//! An owner's bookkeeping of its writes (writes.rs), over in-process fake peers: the
//! writes it replays to a member new to its view (the last minute, at most 4096 keys,
//! oldest first, retried), invalidations it could not deliver, versions it accepts.

#[path = "common/in_process.rs"]
mod in_process;

use std::time::Duration;

use bytes::Bytes;
use in_process::{Call, InProcess};
use peercache::peer::PeerRef;

const NODES: [&str; 3] = ["a", "b", "c"];

/// A cluster where b does not see c yet, and `n` keys b owns in every view.
fn cluster_without_c(n: usize) -> (InProcess, Vec<String>) {
    let c = InProcess::new(&NODES, |g| g);
    c.view("b", &["a", "b"]);
    let keys = (0..)
        .map(|i| format!("k{i}"))
        .filter(|k| c.owner_in_view_of("b", k) == "b" && c.owner_in_view_of("a", k) == "b")
        .take(n)
        .collect();
    (c, keys)
}

/// b sees c appear: its peer for c.
fn c_appears(c: &InProcess) -> Vec<PeerRef> {
    let added = c.view("b", &NODES);
    assert_eq!(added.len(), 1);
    added
}

async fn set_on_b(c: &InProcess, key: &str) {
    c.group("b")
        .set(key, Bytes::from("new"), None)
        .await
        .unwrap();
}

fn invalidations(keys: &[&str]) -> Vec<Call> {
    let call = |k: &&str| Call::new("b", "c", "invalidate", k);
    keys.iter().map(call).collect()
}

#[tokio::test(start_paused = true)]
async fn writes_up_to_a_minute_old_are_replayed_oldest_first() {
    let (c, keys) = cluster_without_c(4);
    set_on_b(&c, &keys[0]).await;
    set_on_b(&c, &keys[1]).await;
    tokio::time::advance(Duration::from_secs(60)).await;
    set_on_b(&c, &keys[2]).await;
    c.take_calls();
    let c_peer = c_appears(&c);
    assert_eq!(c.registry("b").replay_writes(&c_peer).await, 0);
    let all = [&*keys[0], &keys[1], &keys[2]];
    assert_eq!(
        c.take_calls(),
        invalidations(&all),
        "a minute old is still replayed"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    set_on_b(&c, &keys[3]).await;
    c.take_calls();
    assert_eq!(c.registry("b").replay_writes(&c_peer).await, 0);
    assert_eq!(c.take_calls(), invalidations(&[&keys[2], &keys[3]]));
}

/// The log keeps a key once, at its latest write: a hot key written thousands of times
/// does not push the other keys out.
#[tokio::test]
async fn a_hot_key_does_not_push_other_keys_out_of_the_replay() {
    let (c, keys) = cluster_without_c(2);
    set_on_b(&c, &keys[0]).await;
    for _ in 0..4096 {
        set_on_b(&c, &keys[1]).await;
    }
    c.take_calls();
    let c_peer = c_appears(&c);
    assert_eq!(c.registry("b").replay_writes(&c_peer).await, 0);
    assert_eq!(c.take_calls(), invalidations(&[&keys[0], &keys[1]]));
}

/// A replayed invalidation that fails is sent again.
#[tokio::test(start_paused = true)]
async fn a_replay_that_fails_is_retried() {
    let (c, keys) = cluster_without_c(1);
    set_on_b(&c, &keys[0]).await;
    c.take_calls();
    let c_peer = c_appears(&c);
    c.fail_next("c", 1);
    assert_eq!(c.registry("b").replay_writes(&c_peer).await, 0, "delivered");
    assert_eq!(c.take_calls(), invalidations(&[&keys[0], &keys[0]]));
    assert_eq!(c.group("b").stats().invalidations_failed, 0);
}

#[tokio::test]
async fn at_most_the_last_4096_keys_are_replayed() {
    let (c, keys) = cluster_without_c(4097);
    for key in &keys {
        set_on_b(&c, key).await;
    }
    c.take_calls();
    let c_peer = c_appears(&c);
    assert_eq!(c.registry("b").replay_writes(&c_peer).await, 0);
    let calls = c.take_calls();
    assert_eq!(calls.len(), 4096);
    assert_eq!(calls[0], Call::new("b", "c", "invalidate", &keys[1]));
}

#[tokio::test]
async fn invalidations_not_delivered_are_counted_and_returned() {
    let c = InProcess::new(&NODES, |g| g);
    let key = c.key_owned_by("b", &["a", "b"]);
    c.set_down("c", true);
    set_on_b(&c, &key).await;
    let b = c.group("b");
    assert_eq!(b.stats().invalidations_failed, 1, "c was down");
    // Replayed to c (say, once b saw it again) while it is still down: not delivered.
    c.view("b", &["a", "b"]);
    let c_peer = c_appears(&c);
    assert_eq!(c.registry("b").replay_writes(&c_peer).await, 1);
    assert_eq!(b.stats().invalidations_failed, 2);
    c.set_down("c", false);
    assert_eq!(c.registry("b").replay_writes(&c_peer).await, 0);
    assert_eq!(b.stats().invalidations_failed, 2);
}

/// A version above 2^62 from the network still drops the copy, but raises the key's
/// floor only to 2^62: the owner's next version stays just above it.
#[tokio::test]
async fn versions_from_the_network_raise_a_floor_at_most_to_two_to_the_62() {
    let c = InProcess::new(&NODES, |g| g);
    let key = c.key_owned_by("a", &["a"]);
    let a = c.group("a");
    for version in [1, 1 << 62, (1 << 62) + 1, u64::MAX] {
        a.get(&key).await.unwrap();
        assert!(a.holds(&key));
        assert_eq!(
            a.invalidate(&key, version).map_err(|e| e.to_string()),
            Ok(())
        );
        assert!(!a.holds(&key), "the copy goes at version {version}");
    }
    let written = a.set(&key, Bytes::from("v"), None).await.unwrap();
    assert!(written > 1 << 62, "above the floor: {written}");
    assert!(
        written < (1 << 62) + 8,
        "the floor stopped at 2^62: {written}"
    );
}
