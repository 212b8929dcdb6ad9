//! The registry on a turmoil host: the coordinator conformance suite from a simulated
//! client, and `LeasedDiscovery` nodes of which one loses the registry in a partition.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peercache::discovery::{
    Coordinator, LeasedConfig, LeasedDiscovery, RegistryConfig, RegistryCoordinator,
    RegistryCoordinatorConfig, serve_registry,
};
use peercache::net::{Net, SimNet};
use peercache::{Discovery, Member};

use super::{Replay, seed};

#[path = "../tests/conformance/mod.rs"]
mod conformance;

const REGISTRY: &str = "registry";
const REGISTRY_PORT: u16 = 2379;
const NODES: [&str; 3] = ["n1", "n2", "n3"];
/// Lease TTL of the partition scenario.
const TTL: Duration = Duration::from_secs(2);

fn sim(seed: u64) -> turmoil::Sim<'static> {
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .tick_duration(Duration::from_millis(1))
        .simulation_duration(Duration::from_secs(120))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(10))
        .build();
    sim.host(REGISTRY, || async {
        let listener = SimNet.bind(&format!("0.0.0.0:{REGISTRY_PORT}")).await?;
        serve_registry(listener, RegistryConfig::default(), std::future::pending()).await?;
        Ok(())
    });
    sim
}

/// A client of the registry host, once it answers (hosts start in the same step as
/// clients, so the listener may not be bound yet).
async fn coordinator() -> RegistryCoordinator {
    let addr = format!("{REGISTRY}:{REGISTRY_PORT}");
    let c = RegistryCoordinator::new(SimNet, &addr, RegistryCoordinatorConfig::default())
        .expect("valid address");
    for _ in 0..50 {
        if c.range("").await.is_ok() {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the registry host never answered");
}

macro_rules! conformance_in_sim {
    ($($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let seed = seed();
                let _replay = Replay {
                    scenario: concat!("registry::", stringify!($case)),
                    seed,
                };
                let mut sim = sim(seed);
                sim.client("client", async {
                    conformance::$case(&coordinator().await).await;
                    Ok(())
                });
                sim.run().expect("simulation succeeds");
            }
        )*
    };
}
conformance::for_each_case!(conformance_in_sim);

/// Every view change: (simulated ms, node, member ids it sees).
type Trace = Vec<(u128, String, Vec<String>)>;

fn now_ms() -> u128 {
    turmoil::sim_elapsed().unwrap_or_default().as_millis()
}

/// A node host: joins through the registry, then records each view it publishes.
fn node(
    i: usize,
    seed: u64,
    trace: Arc<Mutex<Trace>>,
) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = turmoil::Result>>> {
    move || {
        let trace = trace.clone();
        Box::pin(async move {
            let id = NODES[i];
            let config = LeasedConfig {
                prefix: "/peercache/members/".into(),
                lease_ttl: TTL,
                call_timeout: Duration::from_millis(500),
                backoff_min: Duration::from_millis(100),
                backoff_max: Duration::from_secs(1),
                incarnation: 1,
                seed: seed ^ i as u64,
            };
            let discovery = LeasedDiscovery::new(Arc::new(coordinator().await), config);
            let mut view = discovery
                .join(Member::new(id, format!("{id}:7000")))
                .await?;
            loop {
                let ids = view
                    .borrow_and_update()
                    .iter()
                    .map(|m| m.id.clone())
                    .collect();
                trace.lock().unwrap().push((now_ms(), id.to_owned(), ids));
                view.changed().await?;
            }
        })
    }
}

/// The latest view of each node.
fn views(trace: &Mutex<Trace>) -> BTreeMap<String, Vec<String>> {
    let mut latest = BTreeMap::new();
    for (_, node, view) in trace.lock().unwrap().iter() {
        latest.insert(node.clone(), view.clone());
    }
    latest
}

/// Waits (checking every 10 ms, for at most 10 s) until node `n`'s latest view is `ids`,
/// and returns the simulated ms when it became so.
async fn view_becomes(trace: &Mutex<Trace>, n: &str, ids: &[&str]) -> u128 {
    for _ in 0..1000 {
        let at = trace
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(_, node, _)| node == n)
            .cloned();
        if let Some((at, _, view)) = at
            && view.iter().map(String::as_str).eq(ids.iter().copied())
        {
            return at;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{n} never saw {ids:?}; views now {:?}", views(trace));
}

/// One run of the partition scenario; returns the trace.
fn partition_run(seed: u64) -> Trace {
    let mut sim = sim(seed);
    let trace = Arc::new(Mutex::new(Trace::new()));
    for (i, host) in NODES.into_iter().enumerate() {
        sim.host(host, node(i, seed, trace.clone()));
    }
    let t = trace.clone();
    sim.client("driver", async move {
        let all = ["n1", "n2", "n3"];
        for n in NODES {
            view_becomes(&t, n, &all).await;
        }
        // Steady state for a while: keep-alives flow, nothing changes.
        let changes = t.lock().unwrap().len();
        tokio::time::sleep(TTL * 2).await;
        let later = t.lock().unwrap().len();
        assert_eq!(later, changes, "{:?}", t.lock().unwrap());

        let cut = now_ms();
        turmoil::partition("n3", REGISTRY);
        // The others drop n3 when the registry expires its lease. n3 cannot tell a
        // partition from a registry that is down for everyone, so it keeps its last
        // view, itself included, until the registry tells it the lease is gone.
        let dropped = [
            view_becomes(&t, "n1", &["n1", "n2"]).await,
            view_becomes(&t, "n2", &["n1", "n2"]).await,
        ];
        let ttl = TTL.as_millis();
        // The last keep-alive that succeeded went at most a third of a TTL (and a lost
        // answer) before the cut.
        for at in dropped {
            assert!(
                at >= cut + ttl / 2 && at <= cut + ttl + 500,
                "dropped by the others {}ms after the cut",
                at - cut,
            );
        }
        // A member record n3 cannot hear of while cut off.
        let c = coordinator().await;
        let record = br#"{"addr":"x:7000","weight":1,"incarnation":1}"#.to_vec();
        c.put("/peercache/members/x", record, 0).await?;
        view_becomes(&t, "n1", &["n1", "n2", "x"]).await;
        view_becomes(&t, "n2", &["n1", "n2", "x"]).await;
        tokio::time::sleep(TTL * 2).await;
        let expected = BTreeMap::from([
            (
                "n1".to_owned(),
                vec!["n1".to_owned(), "n2".to_owned(), "x".to_owned()],
            ),
            (
                "n2".to_owned(),
                vec!["n1".to_owned(), "n2".to_owned(), "x".to_owned()],
            ),
            ("n3".to_owned(), all.iter().map(|s| s.to_string()).collect()),
        ]);
        assert_eq!(views(&t), expected, "while the partition lasts");
        turmoil::repair("n3", REGISTRY);
        let healed = now_ms();
        for n in NODES {
            let back = view_becomes(&t, n, &["n1", "n2", "n3", "x"]).await;
            assert!(back - healed <= 5_000, "{n} took {}ms", back - healed);
        }
        // n3 follows changes again.
        c.delete("/peercache/members/x").await?;
        for n in NODES {
            view_becomes(&t, n, &all).await;
        }
        Ok(())
    });
    sim.run().expect("simulation succeeds");
    std::mem::take(&mut *trace.lock().unwrap())
}

#[test]
fn a_partitioned_node_keeps_its_view_and_comes_back() {
    let seed = seed();
    let _replay = Replay {
        scenario: "registry::a_partitioned_node_keeps_its_view_and_comes_back",
        seed,
    };
    let trace = partition_run(seed);
    let again = partition_run(seed);
    assert_eq!(trace, again, "SIM_SEED={seed} must replay identically");
    println!(
        "sim: scenario=registry_partition seed={seed} view_changes={} sim_ms={}",
        trace.len(),
        trace.last().map_or(0, |t| t.0)
    );
}
