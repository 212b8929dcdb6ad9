//! Smoke test of the whole node on simulated hosts: the same `Node` (gRPC between peers,
//! HTTP for clients) on `node1`..`node3`, driven by a `client` host over the simulated
//! network with hyper's HTTP/1.1 client.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use peercache::net::SimNet;
use peercache::ring::DEFAULT_VNODES;
use peercache::{
    HotConfig, LoaderFn, Member, Net, Node, NodeConfig, Registry, Ring, StaticDiscovery, TokioClock,
};
use serde_json::Value;

use super::{Replay, seed};

pub(super) const GRPC_PORT: u16 = 7000;
pub(super) const HTTP_PORT: u16 = 8080;
const NODES: [&str; 3] = ["node1", "node2", "node3"];
const KEYS: usize = 20;

pub(super) use crate::harness::BoxError;
use crate::harness::http::call;

/// What the client saw: (simulated ms, request, status, body).
type Trace = Vec<(u128, String, u16, String)>;

pub(super) fn advertise(host: &str) -> String {
    format!("{host}:{GRPC_PORT}")
}

/// One node host: the real `Node` over `SimNet`, one group `g` whose loader answers
/// `v:<key>` and counts its calls in `loads`.
fn node_host(
    i: usize,
    seed: u64,
    loads: Arc<AtomicU64>,
) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = turmoil::Result>>> {
    move || {
        let loads = loads.clone();
        Box::pin(async move {
            let registry = Registry::with_seed(Arc::new(TokioClock::new()), seed ^ i as u64);
            registry
                .group("g")
                .capacity(4 << 20)
                // Every fetched copy is kept for longer than the test runs, so only the
                // owner's invalidation keeps reads fresh after a write.
                .hot(HotConfig {
                    ttl: Duration::from_secs(3600),
                    fill_ratio: 1.0,
                    ..HotConfig::default()
                })
                .timeout(Duration::from_secs(5))
                .loader(LoaderFn(move |key: String| {
                    loads.fetch_add(1, Ordering::Relaxed);
                    async move { Ok(Bytes::from(format!("v:{key}"))) }
                }))
                .build()?;
            serve_node(&NODES, i, registry).await
        })
    }
}

/// Runs node `i` of `hosts` (static peers: all of `hosts`) with `registry`'s groups on
/// the simulated network, gRPC on `GRPC_PORT` and HTTP on `HTTP_PORT`, until the
/// simulation ends.
pub(super) async fn serve_node(hosts: &[&str], i: usize, registry: Registry) -> turmoil::Result {
    let grpc = SimNet.bind(&format!("0.0.0.0:{GRPC_PORT}")).await?;
    let http = SimNet.bind(&format!("0.0.0.0:{HTTP_PORT}")).await?;
    let discovery = Arc::new(StaticDiscovery::new(hosts.iter().map(|h| advertise(h))));
    let config = NodeConfig::new(advertise(hosts[i]));
    Node::new(SimNet, registry, discovery, config)
        .run(grpc, Some(http), std::future::pending())
        .await?;
    Ok(())
}

/// The ring every node of `hosts` builds from the static list.
pub(super) fn ring_of(hosts: &[&str]) -> Ring {
    Ring::new(
        hosts
            .iter()
            .map(|h| Member::new(advertise(h), advertise(h))),
        DEFAULT_VNODES,
    )
}

/// Waits until every host answers `/healthz` (at most 50 tries, 100 ms apart).
pub(super) async fn wait_healthy(hosts: &[&str]) {
    for host in hosts {
        let mut attempts = 0;
        loop {
            match http(host, Method::GET, "/healthz", "").await {
                Ok((StatusCode::OK, _)) => break,
                _ if attempts < 50 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => panic!("{host} not healthy after {attempts} attempts: {other:?}"),
            }
        }
    }
}

/// One HTTP/1.1 exchange with `host`, on a fresh simulated connection.
pub(super) async fn http(
    host: &str,
    method: Method,
    path: &str,
    body: &str,
) -> Result<(StatusCode, Bytes), BoxError> {
    call(host, method, path, body.to_owned()).await
}

/// The client host's checks, recording each exchange into `trace`.
async fn drive(trace: Arc<Mutex<Trace>>) -> Result<(), BoxError> {
    let call = |host: &'static str, method: Method, path: String, body: String| {
        let trace = trace.clone();
        async move {
            let (status, got) = http(host, method.clone(), &path, &body).await?;
            let at = turmoil::sim_elapsed().unwrap_or_default().as_millis();
            let text = String::from_utf8_lossy(&got).into_owned();
            trace.lock().unwrap().push((
                at,
                format!("{method} {host}{path}"),
                status.as_u16(),
                text.clone(),
            ));
            Result::<_, BoxError>::Ok((status, text))
        }
    };
    let stats = |host: &'static str| {
        let call = &call;
        async move {
            let (status, body) = call(host, Method::GET, "/v1/stats".into(), String::new()).await?;
            assert_eq!(status, StatusCode::OK, "stats of {host}");
            let json: Value = serde_json::from_str(&body)?;
            assert_eq!(json["node"].as_str(), Some(advertise(host).as_str()));
            Result::<_, BoxError>::Ok(json["groups"]["g"].clone())
        }
    };
    let counter = |s: &Value, name: &str| s[name].as_u64().expect(name);

    wait_healthy(&NODES).await;
    // The ring every node builds from the static list, to know each key's owner.
    let ring = ring_of(&NODES);
    let keys: Vec<String> = (0..KEYS).map(|i| format!("k{i}")).collect();
    let owner = |key: &str| {
        let id = &ring.owner(key).expect("non-empty ring").id;
        NODES.iter().position(|h| advertise(h) == *id).unwrap()
    };
    let mut owned = [0u64; 3];
    for key in &keys {
        owned[owner(key)] += 1;
    }

    // Reads through every node: the envelope, then the raw value (now a main or hot hit).
    for host in NODES {
        for key in &keys {
            let (status, body) = call(
                host,
                Method::GET,
                format!("/api?group=g&key={key}"),
                String::new(),
            )
            .await?;
            assert_eq!(status, StatusCode::OK, "GET /api {key} via {host}: {body}");
            let json: Value = serde_json::from_str(&body)?;
            assert_eq!(json["group"], "g");
            assert_eq!(json["key"].as_str(), Some(key.as_str()));
            assert_eq!(json["value"].as_str(), Some(format!("v:{key}").as_str()));
            let got = call(
                host,
                Method::GET,
                format!("/v1/groups/g/keys/{key}"),
                String::new(),
            )
            .await?;
            assert_eq!(
                got,
                (StatusCode::OK, format!("v:{key}")),
                "{key} via {host}"
            );
        }
    }
    let mut loads = 0;
    let mut peer_loads = 0;
    let mut hot_hits = 0;
    for (i, host) in NODES.into_iter().enumerate() {
        let s = stats(host).await?;
        assert_eq!(
            counter(&s, "loads"),
            owned[i],
            "{host} loads the keys it owns"
        );
        loads += counter(&s, "loads");
        peer_loads += counter(&s, "peer_loads");
        hot_hits += counter(&s, "hot_hits");
        assert_eq!(counter(&s, "peer_errors"), 0, "{host}");
    }
    assert_eq!(loads, KEYS as u64, "each key loaded once cluster-wide");
    // Each node fetched each key it does not own from the owner, over simulated gRPC...
    assert_eq!(peer_loads, 2 * KEYS as u64);
    // ...and answered the second read from its hot copy.
    assert_eq!(hot_hits, 2 * KEYS as u64);

    // Writes through a node that does not own the key.
    for key in &keys {
        let writer = NODES[(owner(key) + 1) % NODES.len()];
        let (status, body) = call(
            writer,
            Method::PUT,
            format!("/v1/groups/g/keys/{key}"),
            format!("new:{key}"),
        )
        .await?;
        assert_eq!(status, StatusCode::OK, "PUT {key} via {writer}: {body}");
        let json: Value = serde_json::from_str(&body)?;
        assert!(json["version"].as_u64().is_some_and(|v| v > 0), "{body}");
    }
    // Read back everywhere: owners hold the new value, copies elsewhere were invalidated.
    for host in NODES {
        for key in &keys {
            let got = call(
                host,
                Method::GET,
                format!("/v1/groups/g/keys/{key}"),
                String::new(),
            )
            .await?;
            assert_eq!(
                got,
                (StatusCode::OK, format!("new:{key}")),
                "{key} via {host} after the write"
            );
        }
    }
    let mut loads = 0;
    let mut peer_loads = 0;
    for host in NODES {
        let s = stats(host).await?;
        loads += counter(&s, "loads");
        peer_loads += counter(&s, "peer_loads");
        assert_eq!(counter(&s, "invalidations_failed"), 0, "{host}");
        assert_eq!(counter(&s, "peer_errors"), 0, "{host}");
    }
    assert_eq!(loads, KEYS as u64, "writes load nothing");
    // Every non-owner's copy was dropped, so each fetched the new value from the owner.
    assert_eq!(peer_loads, 4 * KEYS as u64);
    Ok(())
}

/// One run; returns the client's trace and each node's loader calls.
fn run(seed: u64) -> (Trace, Vec<u64>) {
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .tick_duration(Duration::from_millis(5))
        .simulation_duration(Duration::from_secs(120))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(20))
        .build();
    let loads: Vec<Arc<AtomicU64>> = NODES.iter().map(|_| Arc::default()).collect();
    for (i, host) in NODES.into_iter().enumerate() {
        sim.host(host, node_host(i, seed, loads[i].clone()));
    }
    let trace = Arc::new(Mutex::new(Trace::new()));
    let out = trace.clone();
    sim.client("client", async move {
        drive(out)
            .await
            .map_err(|e| -> Box<dyn std::error::Error> { e })
    });
    sim.run().expect("simulation succeeds");
    let trace = std::mem::take(&mut *trace.lock().unwrap());
    (
        trace,
        loads.iter().map(|l| l.load(Ordering::Relaxed)).collect(),
    )
}

#[test]
fn nodes_on_simulated_hosts_serve_gets_and_sets() {
    let seed = seed();
    let _replay = Replay {
        scenario: "cluster::nodes_on_simulated_hosts_serve_gets_and_sets",
        seed,
    };
    let (trace, loads) = run(seed);
    assert_eq!(
        loads.iter().sum::<u64>(),
        KEYS as u64,
        "loader calls: {loads:?}"
    );
    // healthz is not traced: 3 × 20 × 2 reads, 3 stats, 20 writes, 3 × 20 reads, 3 stats.
    assert_eq!(trace.len(), 120 + 3 + 20 + 60 + 3);
    let (again, loads_again) = run(seed);
    assert_eq!(loads, loads_again);
    assert_eq!(trace, again, "SIM_SEED={seed} must replay identically");
    println!(
        "sim: scenario=cluster seed={seed} ops={} sim_ms={}",
        trace.len(),
        trace.last().map_or(0, |t| t.0)
    );
}
