//! Smoke test of the whole node on simulated hosts: the same `Node` (gRPC between peers,
//! HTTP for clients) on `node0`..`node2` with a static peer list, driven by a `client`
//! host over the simulated network with hyper's HTTP/1.1 client.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use peercache::{HotConfig, LoaderFn};
use serde_json::Value;

use super::replayed;
use crate::harness::BoxError;
use crate::harness::group::{GROUP, GroupSpec};
use crate::harness::http::{Exchange, Recorder, counter, key_path, wait_healthy};
use crate::harness::node::{NodeSpec, Peers, advertise, static_ring};
use crate::harness::world::World;

const NODES: usize = 3;
const KEYS: usize = 20;

/// Node `i`: one group whose loader answers `v:<key>` and counts its calls in `loads`.
fn node(i: usize, seed: u64, loads: Arc<AtomicU64>) -> NodeSpec {
    let loader = LoaderFn(move |key: String| {
        loads.fetch_add(1, Ordering::Relaxed);
        async move { Ok(Bytes::from(format!("v:{key}"))) }
    });
    let group = GroupSpec {
        capacity: Some(4 << 20),
        // Every fetched copy is kept for longer than the test runs, so only the owner's
        // invalidation keeps reads fresh after a write.
        hot: Some(HotConfig {
            ttl: Duration::from_secs(3600),
            fill_ratio: 1.0,
            ..HotConfig::default()
        }),
        timeout: Some(Duration::from_secs(5)),
        ..GroupSpec::new(loader)
    };
    NodeSpec::new(i, seed, group, Peers::Static(NODES))
}

/// The client host's checks.
async fn drive(client: Recorder) -> Result<(), BoxError> {
    wait_healthy(NODES).await;
    // The ring every node builds from the static list, to know each key's owner.
    let ring = static_ring(NODES);
    let keys: Vec<String> = (0..KEYS).map(|i| format!("k{i}")).collect();
    let owner = |key: &str| {
        let id = &ring.owner(key).expect("non-empty ring").id;
        (0..NODES).position(|i| advertise(i) == *id).unwrap()
    };

    // Reads through every node: the envelope, then the raw value (now a main or hot hit).
    for i in 0..NODES {
        for key in &keys {
            envelope(&client, i, key).await?;
            read(&client, i, key, format!("v:{key}"), "").await?;
        }
    }
    let stats = all_stats(&client).await?;
    for (i, s) in stats.iter().enumerate() {
        let owned = keys.iter().filter(|k| owner(k) == i).count() as u64;
        assert_eq!(counter(s, "loads"), owned, "node{i} loads the keys it owns");
        assert_eq!(counter(s, "peer_errors"), 0, "node{i}");
    }
    assert_eq!(
        total(&stats, "loads"),
        KEYS as u64,
        "each key loaded once cluster-wide"
    );
    // Each node fetched each key it does not own from the owner, over simulated gRPC...
    assert_eq!(total(&stats, "peer_loads"), 2 * KEYS as u64);
    // ...and answered the second read from its hot copy.
    assert_eq!(total(&stats, "hot_hits"), 2 * KEYS as u64);

    // Writes through a node that does not own the key.
    for key in &keys {
        let writer = (owner(key) + 1) % NODES;
        let new = format!("new:{key}");
        let (status, body) = client
            .call(writer, Method::PUT, &key_path(key), &new)
            .await?;
        assert_eq!(status, StatusCode::OK, "PUT {key} via node{writer}: {body}");
        let json: Value = serde_json::from_str(&body)?;
        assert!(json["version"].as_u64().is_some_and(|v| v > 0), "{body}");
    }
    // Read back everywhere: owners hold the new value, copies elsewhere were invalidated.
    for i in 0..NODES {
        for key in &keys {
            read(&client, i, key, format!("new:{key}"), " after the write").await?;
        }
    }
    let stats = all_stats(&client).await?;
    for (i, s) in stats.iter().enumerate() {
        assert_eq!(counter(s, "invalidations_failed"), 0, "node{i}");
        assert_eq!(counter(s, "peer_errors"), 0, "node{i}");
    }
    assert_eq!(total(&stats, "loads"), KEYS as u64, "writes load nothing");
    // Every non-owner's copy was dropped, so each fetched the new value from the owner.
    assert_eq!(total(&stats, "peer_loads"), 4 * KEYS as u64);
    Ok(())
}

/// Reads `key` through node `i` in the JSON envelope of `/api`.
async fn envelope(client: &Recorder, i: usize, key: &str) -> Result<(), BoxError> {
    let api = format!("/api?group={GROUP}&key={key}");
    let (status, body) = client.call(i, Method::GET, &api, "").await?;
    assert_eq!(status, StatusCode::OK, "GET /api {key} via node{i}: {body}");
    let json: Value = serde_json::from_str(&body)?;
    assert_eq!(json["group"], GROUP);
    assert_eq!(json["key"].as_str(), Some(key));
    assert_eq!(json["value"].as_str(), Some(format!("v:{key}").as_str()));
    Ok(())
}

/// Reads `key` through node `i`, expecting `want`.
async fn read(
    client: &Recorder,
    i: usize,
    key: &str,
    want: String,
    when: &str,
) -> Result<(), BoxError> {
    let got = client.get(i, key).await?;
    assert_eq!(got, (StatusCode::OK, want), "{key} via node{i}{when}");
    Ok(())
}

/// Every node's statistics of the group, in node order.
async fn all_stats(client: &Recorder) -> Result<Vec<Value>, BoxError> {
    let mut stats = vec![];
    for i in 0..NODES {
        stats.push(client.stats(i).await?);
    }
    Ok(stats)
}

/// A counter summed over the nodes.
fn total(stats: &[Value], name: &str) -> u64 {
    stats.iter().map(|s| counter(s, name)).sum()
}

/// One run; returns the client's exchanges and each node's loader calls.
fn run(seed: u64) -> (Vec<Exchange>, Vec<u64>) {
    let loads: Vec<Arc<AtomicU64>> = (0..NODES).map(|_| Arc::default()).collect();
    let world = World {
        duration: Duration::from_secs(120),
        ..World::new(seed)
    };
    let nodes = (0..NODES).map(|i| node(i, seed, loads[i].clone()));
    let ((), trace) = world.run_nodes_and_client(nodes, drive);
    (
        trace,
        loads.iter().map(|l| l.load(Ordering::Relaxed)).collect(),
    )
}

#[test]
fn nodes_on_simulated_hosts_serve_gets_and_sets() {
    let test = "cluster::nodes_on_simulated_hosts_serve_gets_and_sets";
    replayed(test, run, |seed, (trace, loads)| {
        assert_eq!(
            loads.iter().sum::<u64>(),
            KEYS as u64,
            "loader calls: {loads:?}"
        );
        // healthz is not traced: 3 × 20 × 2 reads, 3 stats, 20 writes, 3 × 20 reads, 3 stats.
        assert_eq!(trace.len(), 120 + 3 + 20 + 60 + 3);
        println!(
            "sim: scenario=cluster seed={seed} ops={} sim_ms={}",
            trace.len(),
            trace.last().map_or(0, |t| t.end)
        );
    });
}
