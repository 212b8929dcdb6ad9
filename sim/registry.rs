//! The registry on a turmoil host: the coordinator conformance suite from a simulated
//! client, and `LeasedDiscovery` nodes of which one loses the registry in a partition.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peercache::Member;
use peercache::discovery::Coordinator;

use super::{Replay, replayed, seed};
use crate::harness::membership::{self, Lease, MEMBERS, REGISTRY_HOST, answering_coordinator};
use crate::harness::node::{advertise, host_name};
use crate::harness::world::{Software, World, now, run_client};

#[path = "../tests/conformance/mod.rs"]
mod conformance;

const NODES: usize = 3;
/// Lease TTL of the partition scenario.
const TTL: Duration = Duration::from_secs(2);

/// A world with the registry host.
fn sim(seed: u64) -> turmoil::Sim<'static> {
    let mut sim = World {
        tick: Duration::from_millis(1),
        duration: Duration::from_secs(120),
        latency: (Duration::from_millis(1), Duration::from_millis(10)),
        ..World::new(seed)
    }
    .build();
    membership::add_registry(&mut sim);
    sim
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
                run_client(sim(seed), "client", async {
                    conformance::$case(&answering_coordinator().await).await;
                    Ok(())
                });
            }
        )*
    };
}
conformance::for_each_case!(conformance_in_sim);

/// Every view change: (simulated ms, node, member ids it sees).
type Trace = Vec<(u128, String, Vec<String>)>;

/// A node host: joins through the registry, then records each view it publishes.
fn node(i: usize, seed: u64, trace: Arc<Mutex<Trace>>) -> impl Fn() -> Software {
    move || {
        let trace = trace.clone();
        Box::pin(async move {
            let id = host_name(i);
            let lease = Lease {
                call_timeout: Some(Duration::from_millis(500)),
                backoff_max: Some(Duration::from_secs(1)),
                ..Lease::new(TTL)
            };
            let discovery = lease.discovery(answering_coordinator().await, 1, seed ^ i as u64);
            let mut view = discovery
                .join(Member::new(id.as_str(), advertise(i)))
                .await?;
            loop {
                let ids = view
                    .borrow_and_update()
                    .iter()
                    .map(|m| m.id.clone())
                    .collect();
                trace
                    .lock()
                    .unwrap()
                    .push((now().as_millis(), id.clone(), ids));
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
    for i in 0..NODES {
        sim.host(host_name(i), node(i, seed, trace.clone()));
    }
    let t = trace.clone();
    run_client(sim, "driver", async move {
        // `c` is the node cut off from the registry.
        let [a, b, c] = [0, 1, 2].map(host_name);
        let (a, b, c) = (a.as_str(), b.as_str(), c.as_str());
        let all = [a, b, c];
        for n in all {
            view_becomes(&t, n, &all).await;
        }
        // Steady state for a while: keep-alives flow, nothing changes.
        let changes = t.lock().unwrap().len();
        tokio::time::sleep(TTL * 2).await;
        let later = t.lock().unwrap().len();
        assert_eq!(later, changes, "{:?}", t.lock().unwrap());

        let cut = now().as_millis();
        turmoil::partition(c, REGISTRY_HOST);
        // The others drop c when the registry expires its lease. c cannot tell a
        // partition from a registry that is down for everyone, so it keeps its last
        // view, itself included, until the registry tells it the lease is gone.
        let dropped = [
            view_becomes(&t, a, &[a, b]).await,
            view_becomes(&t, b, &[a, b]).await,
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
        // A member record c cannot hear of while cut off.
        let registry = answering_coordinator().await;
        let record = br#"{"addr":"x:7000","weight":1,"incarnation":1}"#.to_vec();
        let x = format!("{MEMBERS}x");
        registry.put(&x, record, 0).await?;
        view_becomes(&t, a, &[a, b, "x"]).await;
        view_becomes(&t, b, &[a, b, "x"]).await;
        tokio::time::sleep(TTL * 2).await;
        let strings = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let expected = BTreeMap::from([
            (a.to_owned(), strings(&[a, b, "x"])),
            (b.to_owned(), strings(&[a, b, "x"])),
            (c.to_owned(), strings(&all)),
        ]);
        assert_eq!(views(&t), expected, "while the partition lasts");
        turmoil::repair(c, REGISTRY_HOST);
        let healed = now().as_millis();
        for n in all {
            let back = view_becomes(&t, n, &[a, b, c, "x"]).await;
            assert!(back - healed <= 5_000, "{n} took {}ms", back - healed);
        }
        // c follows changes again.
        registry.delete(&x).await?;
        for n in all {
            view_becomes(&t, n, &all).await;
        }
        Ok(())
    });
    std::mem::take(&mut *trace.lock().unwrap())
}

#[test]
fn a_partitioned_node_keeps_its_view_and_comes_back() {
    let test = "registry::a_partitioned_node_keeps_its_view_and_comes_back";
    replayed(test, partition_run, |seed, trace| {
        println!(
            "sim: scenario=registry_partition seed={seed} view_changes={} sim_ms={}",
            trace.len(),
            trace.last().map_or(0, |t| t.0)
        );
    });
}
