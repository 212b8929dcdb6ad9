//! Discovery through a real etcd (Debian's etcd-server, started by each test on free
//! loopback ports with its own data directory): the coordinator conformance suite that
//! the simulator's registry also passes, then `peercache serve` processes joining,
//! leaving, crashing, and riding out an etcd outage; and etcd secured by TLS and by a
//! password (secure.rs).
//!
//! A missing etcd binary fails the tests with a message saying how to install it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use peercache::Error;
use peercache::discovery::Coordinator;
use peercache::source::demo_value;
use tokio::time::Instant;

mod certs;
#[path = "../common/mod.rs"]
mod common;
#[path = "../conformance/mod.rs"]
mod conformance;
mod forged;
mod handoff;
mod nodes;
mod secure;
mod server;

use nodes::{LEASE_TTL, ServeNode, ring_of, rings_become};
use server::EtcdServer;

/// The cluster tests measure timings: one at a time, so they do not share the CPUs.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

macro_rules! conformance_on_etcd {
    ($($case:ident),* $(,)?) => {
        /// Every conformance case against one etcd, concurrently (each under its own
        /// prefix); a failure names its case.
        #[tokio::test]
        async fn etcd_passes_the_coordinator_conformance_suite() {
            let etcd = EtcdServer::start().await;
            let c = Arc::new(etcd.coordinator().await);
            let mut cases = tokio::task::JoinSet::new();
            $(
                let c2 = c.clone();
                cases.spawn(async move {
                    let run = tokio::spawn(async move { conformance::$case(&*c2).await });
                    (stringify!($case), run.await)
                });
            )*
            let mut failed = Vec::new();
            while let Some(done) = cases.join_next().await {
                let (case, result) = done.unwrap();
                if let Err(e) = result {
                    failed.push(format!("{case}: {e}"));
                }
            }
            assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
        }
    };
}
conformance::for_each_case!(conformance_on_etcd);

/// A watch from a revision etcd has compacted away fails with "compacted" (the
/// follower then reads the records again instead of missing changes).
#[tokio::test]
async fn a_watch_from_a_compacted_revision_fails() {
    let etcd = EtcdServer::start().await;
    let c = etcd.coordinator().await;
    let first = c.put("/compaction/k", b"1".to_vec(), 0).await.unwrap();
    let last = c.put("/compaction/k", b"2".to_vec(), 0).await.unwrap();
    let mut raw = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    raw.compact(last, None).await.unwrap();
    let failure = match c.watch("/compaction/", first).await {
        Err(e) => e,
        Ok(mut events) => match tokio::time::timeout(Duration::from_secs(5), events.next()).await {
            Ok(Some(Err(e))) => e,
            other => panic!("a watch from compacted revision {first} gave {other:?}"),
        },
    };
    assert!(
        matches!(&failure, Error::Invalid(why) if why.contains("compacted")),
        "{failure:?}"
    );
    // From the compaction point on, it works.
    let mut events = c.watch("/compaction/", last).await.unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(batch[0].revision(), last);
}

/// A watch stays open across a quiet spell: etcd refuses pings more often than every
/// 5 s (GOAWAY "too_many_pings"), which would cut the watch and every call with it.
#[tokio::test]
async fn a_quiet_watch_is_not_cut_by_etcd() {
    let etcd = EtcdServer::start().await;
    let c = etcd.coordinator().await;
    let mut events = c.watch("/quiet/", 0).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let r = c.put("/quiet/k", b"1".to_vec(), 0).await.unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("the event arrives")
        .expect("the watch is open")
        .expect("the watch did not fail");
    assert_eq!(batch[0].revision(), r);
}

/// Three nodes with weights 1, 1 and 2 started at once: every ring shows all three,
/// with their weights, within 2 s of the last start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_join_and_every_ring_has_them_within_two_seconds() {
    let _one = ONE_AT_A_TIME.lock().await;
    let etcd = EtcdServer::start().await;
    let prefix = "/peercache/join/";
    let mut nodes: Vec<ServeNode> = (0..3)
        .map(|i| ServeNode::spawn(&etcd.endpoint(), prefix, &format!("n{i}"), 1 + i / 2))
        .collect();
    let started = Instant::now();
    let all: Vec<&ServeNode> = nodes.iter().collect();
    let took = rings_become(&all, &all, started, Duration::from_secs(2)).await;
    println!("etcd: 3 nodes in every ring {took:?} after starting them");
    // The heavier node holds twice the points.
    let ring = nodes::json(&format!("{}/v1/ring", nodes[0].url))
        .await
        .unwrap();
    let points: Vec<u64> = (ring["members"].as_array().unwrap().iter())
        .map(|m| m["vnodes"].as_u64().unwrap())
        .collect();
    assert_eq!(points[2], 2 * points[0], "{ring}");
    // Their records in etcd carry the gRPC address and weight.
    let (kvs, _) = etcd.coordinator().await.range(prefix).await.unwrap();
    let record: serde_json::Value = serde_json::from_slice(&kvs[2].value).unwrap();
    assert_eq!(kvs[2].key, format!("{prefix}n2"));
    assert_eq!(record["weight"], 2);
    assert!(record["addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    for n in &mut nodes {
        n.proc.assert_running();
    }
}

/// A second process with an id already registered by a live one refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_id_held_by_a_live_process_is_a_startup_error() {
    let _one = ONE_AT_A_TIME.lock().await;
    let etcd = EtcdServer::start().await;
    let prefix = "/peercache/same-id/";
    let first = ServeNode::spawn(&etcd.endpoint(), prefix, "a", 1);
    // Start-up only (not what is tested): generous for a loaded 2-core machine.
    rings_become(
        &[&first],
        &[&first],
        Instant::now(),
        Duration::from_secs(15),
    )
    .await;
    let mut second = ServeNode::spawn(&etcd.endpoint(), prefix, "a", 1);
    let exit = second.proc.exited_within(LEASE_TTL * 3).await;
    assert!(!exit.success());
    let log = second.log();
    assert!(
        log.contains("node id a is already registered by a live process"),
        "{log}"
    );
    // The first keeps its registration.
    rings_become(&[&first], &[&first], Instant::now(), Duration::from_secs(1)).await;
}

/// SIGTERM: the node deletes its record before it stops, and the others' rings lose it
/// within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gracefully_stopped_node_leaves_the_rings_within_a_second() {
    let _one = ONE_AT_A_TIME.lock().await;
    let etcd = EtcdServer::start().await;
    let mut nodes: Vec<ServeNode> = (0..3)
        .map(|i| ServeNode::spawn(&etcd.endpoint(), "/peercache/leave/", &format!("n{i}"), 1))
        .collect();
    let all: Vec<&ServeNode> = nodes.iter().collect();
    rings_become(&all, &all, Instant::now(), Duration::from_secs(5)).await;
    let stopped = Instant::now();
    nodes[2].proc.terminate();
    let rest: Vec<&ServeNode> = nodes[..2].iter().collect();
    let took = rings_become(&rest, &rest, stopped, Duration::from_secs(1)).await;
    println!("etcd: a stopped node left the rings in {took:?}");
    let exit = nodes[2].proc.exited_within(Duration::from_secs(5)).await;
    assert!(exit.success(), "{exit}");
}

/// kill -9: the record goes when the lease expires, so the others' rings lose the node
/// within the lease TTL and a second; its keys are then served by their new owners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_leaves_within_the_lease_ttl_and_its_keys_move() {
    let _one = ONE_AT_A_TIME.lock().await;
    let etcd = EtcdServer::start().await;
    let mut nodes: Vec<ServeNode> = (0..3)
        .map(|i| ServeNode::spawn(&etcd.endpoint(), "/peercache/kill/", &format!("n{i}"), 1))
        .collect();
    let all: Vec<&ServeNode> = nodes.iter().collect();
    rings_become(&all, &all, Instant::now(), Duration::from_secs(5)).await;
    // Keys the victim owns, read once through it.
    let ring = ring_of(&all);
    let keys: Vec<String> = (0..200)
        .map(|i| format!("k{i}"))
        .filter(|k| ring.owner(k).unwrap().id == "n2")
        .take(10)
        .collect();
    assert_eq!(keys.len(), 10);
    for k in &keys {
        assert_eq!(nodes[2].get(k).await.unwrap().0, 200);
    }
    let killed = Instant::now();
    nodes[2].proc.kill9();
    let rest: Vec<&ServeNode> = nodes[..2].iter().collect();
    let took = rings_become(&rest, &rest, killed, LEASE_TTL + Duration::from_secs(1)).await;
    println!("etcd: a killed node left the rings in {took:?} (lease TTL {LEASE_TTL:?})");
    let new_ring = ring_of(&rest);
    let loads_before = [rest[0].stat("loads").await, rest[1].stat("loads").await];
    for k in &keys {
        for n in &rest {
            let (status, body) = n.get(k).await.unwrap();
            assert_eq!(
                (status, body.as_bytes()),
                (200, &demo_value(k)[..]),
                "{k} via {}",
                n.id
            );
        }
    }
    // Each key was loaded once, by its new owner.
    let mut expected = [0u64; 2];
    for k in &keys {
        let owner = &new_ring.owner(k).unwrap().id;
        let i = rest.iter().position(|n| &n.id == owner).unwrap();
        expected[i] += 1;
    }
    let loads_after = [rest[0].stat("loads").await, rest[1].stat("loads").await];
    let loaded = [
        loads_after[0] - loads_before[0],
        loads_after[1] - loads_before[1],
    ];
    assert_eq!(loaded, expected, "loads by n0 and n1 of the moved keys");
}

/// etcd killed for 10 s while clients read continuously from every node: no read fails
/// and the rings stay as they were; after etcd comes back (with its data, or empty) every
/// node is registered again and the rings agree.
async fn etcd_outage_under_reads(keep_data: bool) {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut etcd = EtcdServer::start().await;
    let prefix = "/peercache/outage/";
    let nodes: Arc<Vec<ServeNode>> = Arc::new(
        (0..3)
            .map(|i| ServeNode::spawn(&etcd.endpoint(), prefix, &format!("n{i}"), 1))
            .collect(),
    );
    let all: Vec<&ServeNode> = nodes.iter().collect();
    rings_become(&all, &all, Instant::now(), Duration::from_secs(5)).await;
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(tokio::sync::Notify::new());
    let failures = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut readers = tokio::task::JoinSet::new();
    for w in 0..6usize {
        let (nodes, ok, failed, stop) = (nodes.clone(), ok.clone(), failed.clone(), stop.clone());
        let failures = failures.clone();
        readers.spawn(async move {
            let stopped = stop.notified();
            tokio::pin!(stopped);
            let mut i = w;
            loop {
                let node = &nodes[i % nodes.len()];
                let key = format!("k{}", i % 300);
                let read = tokio::select! {
                    read = node.get(&key) => read,
                    () = &mut stopped => return,
                };
                match read {
                    Ok((200, body)) if body.as_bytes() == &demo_value(&key)[..] => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        failures
                            .lock()
                            .push(format!("{key} via {}: {other:?}", node.id));
                    }
                }
                i += 7;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    etcd.kill();
    let before = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = ok.load(Ordering::Relaxed) - before;
    // Keep the last known membership: the rings did not change.
    rings_become(&all, &all, Instant::now(), Duration::from_secs(1)).await;
    let back = Instant::now();
    etcd.restart(keep_data).await;
    // Every node registered again, each record seen by all.
    let c = etcd.coordinator().await;
    loop {
        let (kvs, _) = c.range(prefix).await.unwrap();
        if kvs.len() == 3 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "registered: {kvs:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = rings_become(&all, &all, back, Duration::from_secs(15)).await;
    // Reads go on for longer than a lease: the registrations are kept alive.
    tokio::time::sleep(LEASE_TTL + Duration::from_secs(1)).await;
    assert_eq!(c.range(prefix).await.unwrap().0.len(), 3);
    rings_become(&all, &all, Instant::now(), Duration::from_secs(1)).await;
    stop.notify_waiters();
    while readers.join_next().await.is_some() {}
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "etcd: outage of 10 s (data kept: {keep_data}): {ok} reads, {during} during the outage, \
         {failed} failed; rings agree {took:?} after etcd restarted"
    );
    assert_eq!(failed, 0, "failed reads: {:?}", failures.lock());
    assert!(during > 100, "only {during} reads during the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_for_ten_seconds_then_back_with_its_data() {
    etcd_outage_under_reads(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_for_ten_seconds_then_back_empty() {
    etcd_outage_under_reads(false).await;
}
