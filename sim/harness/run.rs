//! Runs one seed of a scenario: builds the world the seed drew, applies its plan,
//! samples the nodes and collects the history.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::history::{Applied, History, Sample};

use super::db::{self, DbConfig};
use super::group::GROUP;
use super::node::{Nodes, host_name};
use super::rogue::{RogueLog, add_rogue};
use super::scenario::Action;
use super::swarm::Swarm;
use super::world::World;
use super::{client, membership};

/// One simulation step.
const TICK: Duration = Duration::from_millis(2);
/// How often the harness samples every node (membership, memory).
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Wall-clock time one seed may take (`SIM_WALL_BUDGET` seconds overrides it).
const WALL_BUDGET: Duration = Duration::from_secs(300);
/// Simulated time a run may take past the end of its workload.
const SIM_BUDGET: Duration = Duration::from_secs(60);

/// What one seed produced, and what it cost.
pub struct Run {
    pub swarm: Swarm,
    pub history: History,
    pub wall: Duration,
    /// Why the run stopped before its end: a budget ran out or a host failed.
    pub aborted: Option<String>,
}

/// Runs what a seed drew.
pub fn run(swarm: Swarm) -> Run {
    run_within(swarm, wall_budget())
}

/// Runs in this process take turns: see [`align_task_ids`].
static TURN: Mutex<()> = Mutex::new(());
/// Each run's tokio task numbers start at a multiple of this (of tokio's 4 shards).
const TASK_ID_ALIGN: u64 = 64;

/// tokio numbers tasks from one counter for the whole process, and a runtime that is
/// dropped, as a crashed host's is, shuts its `tokio::spawn`ed tasks down shard by shard,
/// a task's shard being its number modulo 4. So the order in which a crash drops a host's
/// connections, and so what its peers see, depended on how many tasks the process had
/// made before: a seed replayed in the same process, or run after others in a chunk,
/// could run differently from `SIM_SEED=<seed>` alone. Each run takes its turn (no other
/// run takes numbers meanwhile) and starts at the next multiple of [`TASK_ID_ALIGN`].
fn align_task_ids() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime to number tasks on");
    loop {
        let id = rt.spawn(async {}).id().to_string();
        let id: u64 = id.parse().expect("a tokio task id displays as its number");
        if id % TASK_ID_ALIGN == TASK_ID_ALIGN - 1 {
            break;
        }
    }
}

/// Runs what a seed drew, stopping it if it takes more than `budget` of wall-clock time.
pub fn run_within(swarm: Swarm, budget: Duration) -> Run {
    // A run that panicked left nothing behind that the next one shares.
    let _turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    align_task_ids();
    let seed = swarm.seed;
    let started = Instant::now();
    let world = World {
        tick: TICK,
        duration: swarm.end() + SIM_BUDGET,
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
    let rogue = swarm.rogue_spec().map(|spec| {
        let log = Arc::new(Mutex::new(RogueLog::default()));
        add_rogue(&mut sim, spec, log.clone());
        log
    });
    let ops = Arc::new(Mutex::new(Vec::new()));
    for c in 0..swarm.clients {
        sim.client(
            client::host_name_of(c),
            client::run(c, swarm.clone(), db.clone(), ops.clone()),
        );
    }

    peercache::buggify::install(swarm.setup());
    let (mut history, aborted) = steps(&mut sim, &swarm, &nodes, started, budget);
    history.calls = peercache::buggify::take_calls();
    peercache::buggify::uninstall();
    history.ops = std::mem::take(&mut *ops.lock().unwrap());
    history.ops.sort_by_key(|o| (o.end, o.start, o.worker));
    history.loads = db.lock().unwrap().take_loads();
    history.counters = counters(&nodes);
    history.rogue = rogue.map(|log| log.lock().unwrap().clone());
    Run {
        swarm,
        history,
        wall: started.elapsed(),
        aborted,
    }
}

fn wall_budget() -> Duration {
    std::env::var("SIM_WALL_BUDGET")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(WALL_BUDGET, Duration::from_secs)
}

/// Steps the simulation to its end, applying the plan and sampling the nodes; returns
/// what the harness recorded (faults and samples), and why it stopped early, if it did:
/// a host failed, or the run outlived its simulated-time or wall-clock budget.
fn steps(
    sim: &mut turmoil::Sim<'_>,
    swarm: &Swarm,
    nodes: &Nodes,
    started: Instant,
    budget: Duration,
) -> (History, Option<String>) {
    let mut history = History::default();
    let mut plan = swarm.plan.iter().peekable();
    let mut next_sample = Duration::ZERO;
    let mut links = Links::default();
    loop {
        let done = match sim.step() {
            Ok(done) => done,
            Err(e) => {
                let why = format!(
                    "the run stopped at {:.3}s of simulated time (budget: the workload's end \
                     plus {}s): {e}",
                    sim.elapsed().as_secs_f64(),
                    SIM_BUDGET.as_secs()
                );
                return (history, Some(why));
            }
        };
        if started.elapsed() > budget {
            let why = format!(
                "the run took more than {}s of wall-clock time (SIM_WALL_BUDGET); stopped at \
                 {:.3}s of simulated time",
                budget.as_secs(),
                sim.elapsed().as_secs_f64()
            );
            return (history, Some(why));
        }
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
            return (history, None);
        }
    }
}

/// Each running node's counters at the end, and the handshake counters of every node
/// with TLS.
fn counters(nodes: &Nodes) -> BTreeMap<usize, BTreeMap<&'static str, u64>> {
    let mut counters: BTreeMap<usize, BTreeMap<&'static str, u64>> = BTreeMap::new();
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
                ("handoff_hits", s.handoff_hits),
                ("handoff_peeks", s.handoff_peeks),
                ("handoff_accepted", s.handoff_accepted),
                ("copies_promoted", s.copies_promoted),
                ("failover_gets", s.failover_gets),
                ("relayed_gets", s.relayed_gets),
                ("evictions", s.store.evictions),
                ("stale_rejections", s.store.stale_rejections),
            ]
            .into_iter()
            .collect(),
        );
    }
    // Handshake counters of every node with TLS, running or not.
    for (i, tls) in nodes.tls.lock().unwrap().iter() {
        let c = tls.counters();
        let node = counters.entry(*i).or_default();
        node.insert("tls_refused_incoming", c.refused_incoming());
        node.insert("tls_refused_outgoing", c.refused_outgoing());
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
    /// Holds in force per host pair: a registry hold and a stall may overlap.
    held: BTreeMap<(String, String), usize>,
}

impl Links {
    /// Holds the link between `a` and `b` (again).
    fn hold(&mut self, sim: &mut turmoil::Sim<'_>, a: &str, b: &str) {
        let count = self.held.entry(pair(a, b)).or_default();
        *count += 1;
        if *count == 1 {
            self.cut.insert(pair(a, b));
            sim.hold(a, b);
        }
    }

    /// Ends one hold of the link; the last one releases what waited.
    fn release(&mut self, sim: &mut turmoil::Sim<'_>, a: &str, b: &str) {
        let Some(count) = self.held.get_mut(&pair(a, b)) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            self.held.remove(&pair(a, b));
            self.cut.remove(&pair(a, b));
            sim.release(a, b);
        }
    }
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
        Action::Partition(a, b) | Action::PartitionOneway(a, b) => {
            links.cut.insert(pair(a, b));
            match action {
                Action::Partition(..) => sim.partition(a.as_str(), b.as_str()),
                _ => sim.partition_oneway(a.as_str(), b.as_str()),
            }
        }
        Action::Repair(a, b) | Action::RepairOneway(a, b) => {
            links.cut.remove(&pair(a, b));
            match action {
                Action::Repair(..) => sim.repair(a.as_str(), b.as_str()),
                _ => sim.repair_oneway(a.as_str(), b.as_str()),
            }
        }
        Action::Hold(a, b) => links.hold(sim, a, b),
        Action::Release(a, b) => links.release(sim, a, b),
        Action::Stall(i) | Action::Unstall(i) => {
            let host = host_name(*i);
            for other in swarm.all_hosts().iter().filter(|h| **h != host) {
                match action {
                    Action::Stall(_) => links.hold(sim, &host, other),
                    _ => links.release(sim, &host, other),
                }
            }
        }
        Action::Loss(rate) => {
            links.loss = *rate;
            sim.set_fail_rate(*rate);
            if *rate == 0.0 {
                // turmoil keeps a link the loss broke broken until a later message on it
                // happens to repair it, so a connection long after the loss could still
                // fail. The loss is over: every link not cut on purpose is whole again.
                let hosts = swarm.all_hosts();
                for (i, a) in hosts.iter().enumerate() {
                    for b in &hosts[i + 1..] {
                        if !links.cut.contains(&pair(a, b)) {
                            sim.repair(a.as_str(), b.as_str());
                        }
                    }
                }
            }
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
        // Hosts that act on their own schedule.
        Action::Join(_) | Action::RogueJoin | Action::RogueLeave => {}
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
