//! Runs one seed of a scenario: builds the world the seed drew, applies its plan,
//! samples the nodes and collects the history.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::history::{Applied, History, Sample};

use super::db::{self, DbConfig};
use super::group::GROUP;
use super::node::{Nodes, host_name};
use super::scenario::{Action, Scenario};
use super::swarm::Swarm;
use super::world::World;
use super::{client, membership};

/// One simulation step.
const TICK: Duration = Duration::from_millis(2);
/// How often the harness samples every node (membership, memory).
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// What one seed produced, and what it cost.
pub struct Run {
    pub swarm: Swarm,
    pub history: History,
    pub wall: Duration,
}

/// Runs one seed of `scenario`.
pub fn run(scenario: Scenario, seed: u64) -> Run {
    let swarm = Swarm::draw(scenario, seed);
    let started = Instant::now();
    let world = World {
        tick: TICK,
        duration: swarm.end() + Duration::from_secs(60),
        latency: swarm.latency,
        ..World::new(seed)
    };
    let mut sim = world
        .builder()
        // turmoil breaks and repairs links as messages are sent: a randomly broken link
        // drops what is in flight on it and heals on one of the next few messages.
        .repair_rate(0.5)
        .tcp_capacity(4096)
        .build();
    let db = db::add_db(
        &mut sim,
        DbConfig {
            value_size: swarm.value_size,
            latency: swarm.db_latency,
            fail_rate: swarm.db_fail,
        },
        seed,
    );
    membership::add_registry(&mut sim);
    let nodes = Nodes::default();
    for i in 0..swarm.hosts() {
        swarm.node(i).add_to(&mut sim, &nodes);
    }
    let ops = Arc::new(Mutex::new(Vec::new()));
    for c in 0..swarm.clients {
        sim.client(
            client::host_name_of(c),
            client::run(c, swarm.clone(), db.clone(), ops.clone()),
        );
    }

    let mut history = steps(&mut sim, &swarm, &nodes);
    history.ops = std::mem::take(&mut *ops.lock().unwrap());
    history.ops.sort_by_key(|o| (o.end, o.start, o.worker));
    history.loads = db.lock().unwrap().take_loads();
    history.counters = counters(&nodes);
    Run {
        swarm,
        history,
        wall: started.elapsed(),
    }
}

/// Steps the simulation to its end, applying the plan and sampling the nodes; returns
/// what the harness recorded (faults and samples).
fn steps(sim: &mut turmoil::Sim<'_>, swarm: &Swarm, nodes: &Nodes) -> History {
    let mut history = History::default();
    let mut plan = swarm.plan.iter().peekable();
    let mut next_sample = Duration::ZERO;
    let mut links = Links::default();
    loop {
        let done = match sim.step() {
            Ok(done) => done,
            Err(e) => panic!(
                "sim: scenario={} seed={}: a host failed: {e}\n{}",
                swarm.scenario.name(),
                swarm.seed,
                crate::replay_command(&format!("scenarios::{}", swarm.scenario.name()), swarm.seed)
            ),
        };
        let now = sim.elapsed();
        while let Some((at, action)) = plan.next_if(|(at, _)| *at <= now) {
            apply(sim, swarm, nodes, &mut links, action);
            history.faults.push(Applied {
                at: *at,
                what: format!("{action:?}"),
            });
        }
        if now >= next_sample {
            sample(nodes, now, &mut history.samples);
            next_sample += SAMPLE_EVERY;
        }
        if done {
            return history;
        }
    }
}

/// Each running node's counters at the end.
fn counters(nodes: &Nodes) -> BTreeMap<usize, BTreeMap<&'static str, u64>> {
    let mut counters = BTreeMap::new();
    for (i, registry) in nodes.registries.lock().unwrap().iter() {
        let s = registry.get(GROUP).expect("group").stats();
        counters.insert(
            *i,
            [
                ("gets", s.gets),
                ("hits", s.hits),
                ("hot_hits", s.hot_hits),
                ("loads", s.loads),
                ("peer_loads", s.peer_loads),
                ("peer_errors", s.peer_errors),
                ("invalidations_failed", s.invalidations_failed),
                ("evictions", s.store.evictions),
                ("stale_rejections", s.store.stale_rejections),
            ]
            .into_iter()
            .collect(),
        );
    }
    counters
}

/// Network faults in force, as far as a crash needs to know.
#[derive(Default)]
struct Links {
    /// The loss rate now.
    loss: f64,
    /// Host pairs (in name order) with a partition or hold in force.
    cut: std::collections::BTreeSet<(String, String)>,
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

fn apply(
    sim: &mut turmoil::Sim<'_>,
    swarm: &Swarm,
    nodes: &Nodes,
    links: &mut Links,
    action: &Action,
) {
    match action {
        Action::Partition(a, b) | Action::PartitionOneway(a, b) | Action::Hold(a, b) => {
            links.cut.insert(pair(a, b));
            match action {
                Action::Partition(..) => sim.partition(a.as_str(), b.as_str()),
                Action::PartitionOneway(..) => sim.partition_oneway(a.as_str(), b.as_str()),
                _ => sim.hold(a.as_str(), b.as_str()),
            }
        }
        Action::Repair(a, b) | Action::RepairOneway(a, b) | Action::Release(a, b) => {
            links.cut.remove(&pair(a, b));
            match action {
                Action::Repair(..) => sim.repair(a.as_str(), b.as_str()),
                Action::RepairOneway(..) => sim.repair_oneway(a.as_str(), b.as_str()),
                _ => sim.release(a.as_str(), b.as_str()),
            }
        }
        Action::Loss(rate) => {
            links.loss = *rate;
            sim.set_fail_rate(*rate);
        }
        Action::Crash(i) => {
            nodes.registries.lock().unwrap().remove(i);
            // A crash drops the host's tasks in an order that follows tokio's process-wide
            // task ids, and each connection it closes sends a FIN or RST, drawing a latency
            // from the simulation's RNG in that order: the same seed would not replay.
            // Cut the host off first, so those segments are dropped without a draw.
            let host = host_name(*i);
            let open: Vec<String> = swarm
                .all_hosts()
                .into_iter()
                .filter(|h| *h != host && !links.cut.contains(&pair(h, &host)))
                .collect();
            sim.set_fail_rate(0.0);
            for other in &open {
                sim.partition(host.as_str(), other.as_str());
            }
            sim.crash(host.as_str());
            for other in &open {
                sim.repair(host.as_str(), other.as_str());
            }
            sim.set_fail_rate(links.loss);
        }
        Action::Bounce(i) => sim.bounce(host_name(*i)),
        Action::Join(_) => {}
        Action::Leave(i) => {
            if let Some(stop) = nodes.stop.lock().unwrap().get(i) {
                let _ = stop.send(true);
            }
            nodes.registries.lock().unwrap().remove(i);
        }
    }
}

fn sample(nodes: &Nodes, at: Duration, out: &mut Vec<Sample>) {
    for (i, registry) in nodes.registries.lock().unwrap().iter() {
        let Ok(g) = registry.get(GROUP) else {
            continue;
        };
        let s = g.stats();
        let members = registry
            .peers()
            .map(|p| {
                p.view()
                    .ring
                    .members()
                    .iter()
                    .map(|m| m.id.clone())
                    .collect()
            })
            .unwrap_or_default();
        out.push(Sample {
            at,
            node: *i,
            members,
            main_bytes: s.store.bytes,
            main_capacity: s.store.capacity,
            hot_bytes: s.hot.bytes,
            hot_capacity: s.hot.capacity,
        });
    }
}
