//! Conformance of a [`Coordinator`] to etcd's semantics: leases, revisions, watches.
//!
//! Each case is a generic async function over any coordinator, run by tests/registry.rs
//! (registry on loopback), sim/registry.rs (registry under turmoil) and, later, against a
//! real etcd. So the cases wait only with `tokio::time`, each works under its own key
//! prefix (clearing leftovers first, for a reused etcd), and they assert nothing etcd
//! would not do: granted TTLs may be longer than asked (etcd's minimum), expiry comes
//! up to about a second late, and revisions only grow (other writers may bump them too).

#![allow(dead_code)] // each test binary runs the cases through `for_each_case!`

use std::time::Duration;

use futures::StreamExt;
use peercache::Error;
use peercache::discovery::{Coordinator, KeyValue, WatchEvent, WatchStream};
use tokio::time::{Instant, sleep, sleep_until};

/// The TTL the cases ask for.
pub const TTL: Duration = Duration::from_secs(1);
/// How late expiry may be (etcd checks leases about twice a second).
pub const LATE: Duration = Duration::from_secs(1);
/// How early a key may seem to expire, measured from before the grant was sent.
pub const EARLY: Duration = Duration::from_millis(500);
/// Longest wait for an event that must come.
pub const WAIT: Duration = Duration::from_secs(5);

/// Calls `$case!(name, ...)` with every conformance case, so each runner lists them all.
macro_rules! for_each_case {
    ($case:ident) => {
        $case!(
            keep_alive_extends_the_lease,
            lease_expiry_deletes_keys,
            keep_alive_of_an_expired_lease_is_none,
            revoke_deletes_keys,
            create_only_if_absent,
            put_with_an_unknown_lease_fails,
            put_moves_the_key_to_the_new_lease,
            range_is_sorted_and_has_the_revision,
            watch_replays_from_a_revision_in_order,
            watch_skips_other_prefixes,
            watch_from_a_later_revision_waits_for_it,
            delete_of_a_missing_key_changes_nothing,
        );
    };
}
pub(crate) use for_each_case;

/// A grant, then keep-alives every quarter TTL for two TTLs: the key stays.
pub async fn keep_alive_extends_the_lease<C: Coordinator>(c: &C) {
    let p = fresh(c, "keep_alive_extends_the_lease").await;
    let lease = c.grant(TTL).await.unwrap();
    assert!(lease.id != 0 && lease.ttl >= TTL, "{lease:?}");
    c.put(&format!("{p}k"), b"v".to_vec(), lease.id)
        .await
        .unwrap();
    let until = Instant::now() + lease.ttl * 2;
    while Instant::now() < until {
        sleep(lease.ttl / 4).await;
        assert_eq!(c.keep_alive(lease.id).await.unwrap(), Some(lease.ttl));
    }
    assert_eq!(keys(c, &p).await, ["k"]);
    c.revoke(lease.id).await.unwrap();
}

/// Without keep-alives, a lease's keys go after its TTL, and the watch sees them go.
pub async fn lease_expiry_deletes_keys<C: Coordinator>(c: &C) {
    let p = fresh(c, "lease_expiry_deletes_keys").await;
    let sent = Instant::now();
    let lease = c.grant(TTL).await.unwrap();
    for k in ["b", "a"] {
        c.put(&format!("{p}{k}"), vec![], lease.id).await.unwrap();
    }
    c.put(&format!("{p}c"), vec![], 0).await.unwrap();
    let (_, revision) = c.range(&p).await.unwrap();
    let mut events = c.watch(&p, revision + 1).await.unwrap();

    sleep_until(sent + lease.ttl - EARLY).await;
    assert_eq!(keys(c, &p).await, ["a", "b", "c"], "before the TTL");
    let gone = poll(sent + lease.ttl + LATE, || async {
        keys(c, &p).await == ["c"]
    })
    .await;
    assert!(
        gone,
        "the lease's keys outlived the TTL by more than {LATE:?}"
    );
    let deleted = next_events(&mut events, 2).await;
    let mut deleted_keys: Vec<&str> = deleted.iter().map(|e| deleted_key(e, &p)).collect();
    deleted_keys.sort();
    assert_eq!(deleted_keys, ["a", "b"], "{deleted:?}");
    assert!(deleted.iter().all(|e| e.revision() > revision));
    assert_eq!(c.keep_alive(lease.id).await.unwrap(), None);
}

/// A lease past its TTL cannot be kept alive or written under.
pub async fn keep_alive_of_an_expired_lease_is_none<C: Coordinator>(c: &C) {
    let p = fresh(c, "keep_alive_of_an_expired_lease_is_none").await;
    let sent = Instant::now();
    let lease = c.grant(TTL).await.unwrap();
    c.put(&format!("{p}k"), vec![], lease.id).await.unwrap();
    let expired = poll(sent + lease.ttl + LATE, || async {
        keys(c, &p).await.is_empty()
    })
    .await;
    assert!(expired, "the lease outlived its TTL by more than {LATE:?}");
    assert_eq!(c.keep_alive(lease.id).await.unwrap(), None);
    let put = c.put(&format!("{p}k"), vec![], lease.id).await;
    assert!(matches!(put, Err(Error::NotFound(_))), "{put:?}");
    c.revoke(lease.id)
        .await
        .expect("revoking a gone lease is fine");
}

/// Revoking deletes the lease's keys at once; the lease is gone after.
pub async fn revoke_deletes_keys<C: Coordinator>(c: &C) {
    let p = fresh(c, "revoke_deletes_keys").await;
    let lease = c.grant(Duration::from_secs(30)).await.unwrap();
    for k in ["a", "b"] {
        c.put(&format!("{p}{k}"), vec![], lease.id).await.unwrap();
    }
    let (_, revision) = c.range(&p).await.unwrap();
    let mut events = c.watch(&p, revision + 1).await.unwrap();
    c.revoke(lease.id).await.unwrap();
    assert!(keys(c, &p).await.is_empty());
    let deleted = next_events(&mut events, 2).await;
    let mut deleted_keys: Vec<&str> = deleted.iter().map(|e| deleted_key(e, &p)).collect();
    deleted_keys.sort();
    assert_eq!(deleted_keys, ["a", "b"]);
    assert_eq!(c.keep_alive(lease.id).await.unwrap(), None);
    c.revoke(lease.id).await.expect("revoking twice is fine");
}

/// `create` writes only an absent key; create_revision stays until the key is deleted.
pub async fn create_only_if_absent<C: Coordinator>(c: &C) {
    let p = fresh(c, "create_only_if_absent").await;
    let k = format!("{p}k");
    let r1 = c
        .create(&k, b"1".to_vec(), 0)
        .await
        .unwrap()
        .expect("absent");
    assert_eq!(c.create(&k, b"2".to_vec(), 0).await.unwrap(), None);
    let kv = only(c, &p).await;
    assert_eq!(
        (kv.value, kv.create_revision, kv.mod_revision),
        (b"1".to_vec(), r1, r1)
    );
    let r2 = c.put(&k, b"3".to_vec(), 0).await.unwrap();
    assert!(r2 > r1);
    let kv = only(c, &p).await;
    assert_eq!(
        (kv.value, kv.create_revision, kv.mod_revision),
        (b"3".to_vec(), r1, r2)
    );
    let r3 = c.delete(&k).await.unwrap();
    assert!(r3 > r2);
    let r4 = c
        .create(&k, b"4".to_vec(), 0)
        .await
        .unwrap()
        .expect("absent again");
    assert!(r4 > r3);
    assert_eq!(only(c, &p).await.create_revision, r4);
}

/// A put or create under a lease that does not exist fails and writes nothing.
pub async fn put_with_an_unknown_lease_fails<C: Coordinator>(c: &C) {
    let p = fresh(c, "put_with_an_unknown_lease_fails").await;
    let lease = c.grant(TTL).await.unwrap();
    c.revoke(lease.id).await.unwrap();
    let put = c.put(&format!("{p}k"), vec![], lease.id).await;
    assert!(matches!(put, Err(Error::NotFound(_))), "{put:?}");
    let create = c.create(&format!("{p}k"), vec![], lease.id).await;
    assert!(matches!(create, Err(Error::NotFound(_))), "{create:?}");
    assert!(keys(c, &p).await.is_empty());
}

/// A put attaches the key to its lease and detaches it from the previous one.
pub async fn put_moves_the_key_to_the_new_lease<C: Coordinator>(c: &C) {
    let p = fresh(c, "put_moves_the_key_to_the_new_lease").await;
    let k = format!("{p}k");
    let a = c.grant(Duration::from_secs(30)).await.unwrap();
    let b = c.grant(Duration::from_secs(30)).await.unwrap();
    c.put(&k, vec![], a.id).await.unwrap();
    c.put(&k, vec![], b.id).await.unwrap();
    c.revoke(a.id).await.unwrap();
    assert_eq!(only(c, &p).await.lease, b.id);
    c.revoke(b.id).await.unwrap();
    assert!(keys(c, &p).await.is_empty());
}

/// Range answers the keys under the prefix, sorted, and a revision covering them.
pub async fn range_is_sorted_and_has_the_revision<C: Coordinator>(c: &C) {
    let p = fresh(c, "range_is_sorted_and_has_the_revision").await;
    let mut last = 0;
    for k in ["m", "z", "a", "b/c"] {
        last = c
            .put(&format!("{p}{k}"), k.as_bytes().to_vec(), 0)
            .await
            .unwrap();
    }
    c.put(&format!("{}-sibling", p.trim_end_matches('/')), vec![], 0)
        .await
        .unwrap();
    let (kvs, revision) = c.range(&p).await.unwrap();
    let got: Vec<(&str, &[u8])> = (kvs.iter())
        .map(|kv| (&kv.key[p.len()..], kv.value.as_slice()))
        .collect();
    let want: [(&str, &[u8]); 4] = [("a", b"a"), ("b/c", b"b/c"), ("m", b"m"), ("z", b"z")];
    assert_eq!(got, want);
    assert!(revision > last, "the sibling's put came after");
    assert!(
        kvs.iter()
            .all(|kv| kv.mod_revision <= last && kv.lease == 0)
    );
}

/// A watch from a range's revision + 1 replays exactly the later changes, in order, and
/// then follows new ones; a watch from a later revision starts there.
pub async fn watch_replays_from_a_revision_in_order<C: Coordinator>(c: &C) {
    let p = fresh(c, "watch_replays_from_a_revision_in_order").await;
    let (_, r0) = c.range(&p).await.unwrap();
    let r1 = c.put(&format!("{p}a"), b"1".to_vec(), 0).await.unwrap();
    let r2 = c.put(&format!("{p}b"), b"2".to_vec(), 0).await.unwrap();
    let r3 = c.delete(&format!("{p}a")).await.unwrap();
    assert!(r0 < r1 && r1 < r2 && r2 < r3);
    let mut events = c.watch(&p, r0 + 1).await.unwrap();
    let want = [
        (format!("put {p}a"), r1),
        (format!("put {p}b"), r2),
        (format!("delete {p}a"), r3),
    ];
    assert_eq!(describe(&next_events(&mut events, 3).await), want);
    let r4 = c.put(&format!("{p}c"), b"3".to_vec(), 0).await.unwrap();
    assert_eq!(
        describe(&next_events(&mut events, 1).await),
        [(format!("put {p}c"), r4)]
    );
    let mut later = c.watch(&p, r2).await.unwrap();
    assert_eq!(
        describe(&next_events(&mut later, 3).await),
        [
            (format!("put {p}b"), r2),
            (format!("delete {p}a"), r3),
            (format!("put {p}c"), r4),
        ]
    );
    let WatchEvent::Put(kv) = &next_events(&mut c.watch(&p, r4).await.unwrap(), 1).await[0] else {
        panic!("a put");
    };
    assert_eq!((kv.value.as_slice(), kv.create_revision), (&b"3"[..], r4));
}

/// A watch from a revision the store has not reached yet delivers the changes from that
/// revision on and none before it.
pub async fn watch_from_a_later_revision_waits_for_it<C: Coordinator>(c: &C) {
    let p = fresh(c, "watch_from_a_later_revision_waits_for_it").await;
    let (_, r0) = c.range(&p).await.unwrap();
    let start = r0 + 3;
    let mut events = c.watch(&p, start).await.unwrap();
    let mut written = Vec::new();
    for k in ["a", "b", "c", "d"] {
        let r = c.put(&format!("{p}{k}"), vec![], 0).await.unwrap();
        written.push((format!("put {p}{k}"), r));
    }
    // Other writers may move the revision on too: what counts is each put's own.
    let want: Vec<_> = written.into_iter().filter(|(_, r)| *r >= start).collect();
    assert_eq!(describe(&next_events(&mut events, want.len()).await), want);
}

/// A watch delivers nothing for keys outside its prefix, even ones that share its text
/// without the separator.
pub async fn watch_skips_other_prefixes<C: Coordinator>(c: &C) {
    let p = fresh(c, "watch_skips_other_prefixes").await;
    let mut events = c.watch(&format!("{p}a/"), 0).await.unwrap();
    c.put(&format!("{p}b/x"), vec![], 0).await.unwrap();
    c.put(&format!("{p}a0"), vec![], 0).await.unwrap();
    let r = c.put(&format!("{p}a/x"), vec![], 0).await.unwrap();
    assert_eq!(
        describe(&next_events(&mut events, 1).await),
        [(format!("put {p}a/x"), r)]
    );
}

/// Deleting an absent key emits no event and answers a revision no older than before.
pub async fn delete_of_a_missing_key_changes_nothing<C: Coordinator>(c: &C) {
    let p = fresh(c, "delete_of_a_missing_key_changes_nothing").await;
    let (_, r0) = c.range(&p).await.unwrap();
    let mut events = c.watch(&p, r0 + 1).await.unwrap();
    let r = c.delete(&format!("{p}missing")).await.unwrap();
    assert!(r >= r0);
    let marker = c.put(&format!("{p}marker"), vec![], 0).await.unwrap();
    assert!(marker > r);
    assert_eq!(
        describe(&next_events(&mut events, 1).await),
        [(format!("put {p}marker"), marker)],
        "the first event is the marker: the delete emitted none"
    );
}

/// The case's prefix, emptied of whatever an earlier run left.
async fn fresh<C: Coordinator>(c: &C, case: &str) -> String {
    let p = format!("/conformance/{case}/");
    for kv in c.range(&p).await.unwrap().0 {
        c.delete(&kv.key).await.unwrap();
    }
    p
}

/// The keys under `p`, without it.
async fn keys<C: Coordinator>(c: &C, p: &str) -> Vec<String> {
    let (kvs, _) = c.range(p).await.unwrap();
    kvs.into_iter()
        .map(|kv| kv.key[p.len()..].to_owned())
        .collect()
}

/// The one key under `p`.
async fn only<C: Coordinator>(c: &C, p: &str) -> KeyValue {
    let (mut kvs, _) = c.range(p).await.unwrap();
    assert_eq!(kvs.len(), 1, "{kvs:?}");
    kvs.remove(0)
}

/// Waits until `check` holds, checking every 50 ms until `deadline`; whether it held.
async fn poll<F, Fut>(deadline: Instant, check: F) -> bool
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(50)).await;
    }
}

/// The next `n` events (failing if more arrive with them, or if they take over `WAIT`).
async fn next_events(events: &mut WatchStream, n: usize) -> Vec<WatchEvent> {
    let mut got = Vec::new();
    while got.len() < n {
        match tokio::time::timeout(WAIT, events.next()).await {
            Ok(Some(Ok(batch))) => {
                assert!(!batch.is_empty(), "empty batch");
                got.extend(batch);
            }
            Ok(Some(Err(e))) => panic!("watch failed: {e} (after {got:?})"),
            Ok(None) => panic!("watch ended (after {got:?})"),
            Err(_) => panic!("waited {WAIT:?} for {n} events, got {got:?}"),
        }
    }
    assert_eq!(got.len(), n, "{got:?}");
    got
}

/// Events as ("put key" | "delete key", revision).
fn describe(events: &[WatchEvent]) -> Vec<(String, i64)> {
    (events.iter())
        .map(|e| match e {
            WatchEvent::Put(kv) => (format!("put {}", kv.key), kv.mod_revision),
            WatchEvent::Delete { key, revision } => (format!("delete {key}"), *revision),
        })
        .collect()
}

/// The key of a delete event, without `p`.
fn deleted_key<'e>(e: &'e WatchEvent, p: &str) -> &'e str {
    match e {
        WatchEvent::Delete { key, .. } => &key[p.len()..],
        WatchEvent::Put(kv) => panic!("expected a delete, got a put of {}", kv.key),
    }
}
