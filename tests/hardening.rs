//! What a hostile or careless caller of the peer protocol, or an impatient client, must
//! not be able to do to a node: poison versions, exhaust memory, make a load start over.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, Db, db_group};
use peercache::proto::peer_client::PeerClient;
use peercache::proto::{InvalidateRequest, SetRequest};
use peercache::{Error, Group, Loader, Registry};

/// A raw gRPC client of node `i`, as anyone who can reach its port could make.
async fn raw_peer(cluster: &Cluster, i: usize) -> PeerClient<tonic::transport::Channel> {
    PeerClient::connect(format!("http://{}", cluster.nodes[i].id))
        .await
        .expect("connect to the node's gRPC port")
}

/// An `Invalidate` at the top of the version range followed by a `Set` of the same key
/// once made the owner mint versions above what peers accept for every later write, to
/// any key: their invalidations were refused, and other nodes served old copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_version_does_not_stop_invalidations() {
    let db = Db::default();
    let cluster = Cluster::start(2, db_group(&db)).await;
    let (owner, reader) = (cluster.nodes[0].group("g"), cluster.nodes[1].group("g"));
    let k = cluster.key_owned_by(0, "k");
    let x = cluster.key_owned_by(0, "x");
    for key in [&k, &x] {
        assert_eq!(reader.get(key).await.unwrap(), format!("v:{key}"));
    }
    assert_eq!(reader.stats().hot.items, 2, "the reader keeps both copies");

    let mut raw = raw_peer(&cluster, 0).await;
    for version in [1 << 62, u64::MAX] {
        let poison = InvalidateRequest {
            group: "g".into(),
            key: x.clone(),
            version,
        };
        // Accepted or refused, what matters is what follows.
        let _ = raw.invalidate(poison).await;
        let set = SetRequest {
            group: "g".into(),
            key: x.clone(),
            value: Bytes::from_static(b"poison"),
            deadline_ms: 1000,
            ..SetRequest::default()
        };
        raw.set(set).await.expect("a Set through the owner");
    }

    db.write(&k, Some("new k"));
    owner.set(&k, Bytes::from("new k"), None).await.unwrap();
    assert_eq!(
        reader.get(&k).await.unwrap(),
        "new k",
        "another key's write"
    );
    db.write(&x, Some("new x"));
    owner.set(&x, Bytes::from("new x"), None).await.unwrap();
    assert_eq!(
        reader.get(&x).await.unwrap(),
        "new x",
        "the poisoned key's write"
    );
}

/// Counts its loads and how many are running; each takes `took`.
struct Slow {
    took: Duration,
    loads: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
}

struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

#[async_trait::async_trait]
impl Loader for Slow {
    async fn load(&self, key: &str) -> peercache::Result<Bytes> {
        self.loads.fetch_add(1, SeqCst);
        self.running.fetch_add(1, SeqCst);
        let _running = Running(self.running.clone());
        tokio::time::sleep(self.took).await;
        Ok(Bytes::from(format!("v:{key}")))
    }
}

/// A group with a 300 ms timeout over a loader that takes `took`.
fn slow_group(took: Duration) -> (Group, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (loads, running) = (Arc::default(), Arc::default());
    let loader = Slow {
        took,
        loads: Arc::clone(&loads),
        running: Arc::clone(&running),
    };
    let group = Registry::with_seed(1)
        .group("g")
        .capacity(1 << 20)
        .timeout(Duration::from_millis(300))
        .loader(loader)
        .build()
        .unwrap();
    (group, loads, running)
}

/// A get of "k" that gives up after 100 ms.
fn impatient_get(
    group: &Group,
) -> tokio::task::JoinHandle<Result<peercache::Result<Bytes>, tokio::time::error::Elapsed>> {
    let group = group.clone();
    tokio::spawn(
        async move { tokio::time::timeout(Duration::from_millis(100), group.get("k")).await },
    )
}

/// A load once lived only as long as the caller that started it: when that caller gave
/// up, the load was dropped and the next caller started it again from zero, so with a
/// slow source and impatient clients the value was never cached.
#[tokio::test(start_paused = true)]
async fn a_load_outlives_the_caller_that_started_it() {
    let (group, loads, _) = slow_group(Duration::from_millis(280));
    let a = impatient_get(&group);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let b = tokio::spawn({
        let group = group.clone();
        async move { group.get("k").await }
    });
    assert!(a.await.unwrap().is_err(), "A gave up at 100 ms");
    assert_eq!(b.await.unwrap().unwrap(), "v:k", "B got the load A started");
    assert_eq!(loads.load(SeqCst), 1);
    assert_eq!(group.get("k").await.unwrap(), "v:k", "and it was cached");
    assert_eq!(loads.load(SeqCst), 1);
}

/// ... but not beyond the group's own deadline.
#[tokio::test(start_paused = true)]
async fn a_load_ends_at_the_groups_deadline() {
    let (group, loads, running) = slow_group(Duration::from_secs(10));
    let a = impatient_get(&group);
    assert!(a.await.unwrap().is_err());
    assert_eq!(
        running.load(SeqCst),
        1,
        "the load goes on without its caller"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(running.load(SeqCst), 0, "and stops at the group's 300 ms");
    assert!(matches!(group.get("k").await, Err(Error::Timeout)));
    assert_eq!(loads.load(SeqCst), 2);
}

/// A message far above any group's value limit was decoded in full (up to 64 MiB)
/// before the value was checked; parallel ones took gigabytes. It is refused at the
/// transport now, from its length prefix, with a limit derived from the groups' limits.
/// (Before the fix: InvalidArgument from the group, after decoding 9 MiB.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_peer_message_is_refused_at_the_transport() {
    let db = Db::default();
    let cluster = Cluster::start(1, db_group(&db)).await;
    let (max_key, max_value) = cluster.nodes[0].group("g").limits();
    let mut raw = raw_peer(&cluster, 0).await;
    let set = |len: usize| SetRequest {
        group: "g".into(),
        key: "k".into(),
        value: Bytes::from(vec![b'x'; len]),
        deadline_ms: 5000,
        ..SetRequest::default()
    };
    let refused = raw
        .set(set(max_key + max_value + (8 << 20)))
        .await
        .unwrap_err();
    // tonic's code for a message above the decoding limit (grpc-go says
    // ResourceExhausted); what matters is that the transport refused it.
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    assert!(refused.message().contains("too large"), "{refused:?}");
    // Just above the value limit (within the envelope) it is the group that refuses.
    let refused = raw.set(set(max_value + 1)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    raw.set(set(max_value))
        .await
        .expect("the largest value allowed");
}

/// A source that lacks most keys, counting its loads.
fn sparse_group(negative_ttl: Option<Duration>) -> (Group, Db) {
    let db = Db::default();
    db.write("gone", None);
    let builder = Registry::with_seed(1).group("g").loader(db.clone());
    let builder = match negative_ttl {
        Some(ttl) => builder.negative_ttl(ttl),
        None => builder,
    };
    (builder.build().unwrap(), db)
}

/// A flood of gets for a key the source lacks reached the source every time. With a
/// negative TTL the owner answers "not found" from memory until it expires, or until a
/// write of the key.
#[tokio::test(start_paused = true)]
async fn not_found_is_remembered_for_the_negative_ttl() {
    let (group, db) = sparse_group(Some(Duration::from_secs(2)));
    for _ in 0..100 {
        assert!(matches!(group.get("gone").await, Err(Error::NotFound(_))));
    }
    assert_eq!(db.loads("gone"), 1, "one load for 100 gets");
    assert_eq!(group.stats().negative_hits, 99);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(group.get("gone").await.is_err());
    assert_eq!(db.loads("gone"), 2, "loaded again once the TTL passed");
    // A write of the key ends it at once.
    db.write("gone", Some("back"));
    group.set("gone", Bytes::from("back"), None).await.unwrap();
    group.remove("gone").await.unwrap();
    assert_eq!(group.get("gone").await.unwrap(), "back");
}

/// Off by default: every get of a missing key asks the source.
#[tokio::test]
async fn without_a_negative_ttl_not_found_is_not_cached() {
    let (group, db) = sparse_group(None);
    for _ in 0..3 {
        assert!(group.get("gone").await.is_err());
    }
    assert_eq!(db.loads("gone"), 3);
}
