//! The testbed: one seed draws a swarm (cluster shape, timings, workload, faults), runs it
//! on turmoil with a `registry` host, a `db` host, `node<i>` hosts running the real Node
//! and `client<i>` hosts, and returns the recorded history.

pub mod client;
pub mod db;
pub mod membership;
pub mod node;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::history::{Applied, History, Sample};
use db::{Db, DbConfig};
use node::{Nodes, host_name};

/// One simulation step.
pub const TICK: Duration = Duration::from_millis(2);
/// How often the harness samples every node (membership, memory).
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The scenarios; each has a test of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    SteadyState,
    Partition,
    OneWayPartition,
    RegistryPartition,
    ClientPartition,
    RegistryHold,
    MessageLoss,
    LatencySpread,
    CrashBounce,
    ScaleOut,
    GracefulLeave,
    Swarm,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::SteadyState => "steady_state",
            Scenario::Partition => "partition",
            Scenario::OneWayPartition => "one_way_partition",
            Scenario::RegistryPartition => "registry_partition",
            Scenario::ClientPartition => "client_partition",
            Scenario::RegistryHold => "registry_hold",
            Scenario::MessageLoss => "message_loss",
            Scenario::LatencySpread => "latency_spread",
            Scenario::CrashBounce => "crash_bounce",
            Scenario::ScaleOut => "scale_out",
            Scenario::GracefulLeave => "graceful_leave",
            Scenario::Swarm => "swarm",
        }
    }
}

/// Something the harness does to the simulation at a point in time.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Partition(String, String),
    Repair(String, String),
    PartitionOneway(String, String),
    RepairOneway(String, String),
    Hold(String, String),
    Release(String, String),
    /// Random link failures (turmoil's message loss) at this rate per message sent.
    Loss(f64),
    Crash(usize),
    /// Restart a crashed node with an empty cache.
    Bounce(usize),
    /// A node starts and joins (scale-out); its host has waited until now.
    Join(usize),
    /// A node shuts down gracefully: leaves the membership, drains, stops.
    Leave(usize),
}

impl Action {
    /// Hosts this action touches directly; empty for network-wide faults.
    pub fn hosts(&self) -> Vec<String> {
        match self {
            Action::Partition(a, b)
            | Action::Repair(a, b)
            | Action::PartitionOneway(a, b)
            | Action::RepairOneway(a, b)
            | Action::Hold(a, b)
            | Action::Release(a, b) => vec![a.clone(), b.clone()],
            Action::Loss(_) => vec![],
            Action::Crash(i) | Action::Bounce(i) | Action::Join(i) | Action::Leave(i) => {
                vec![host_name(*i)]
            }
        }
    }
}

/// Everything a seed decides about a run.
#[derive(Debug, Clone)]
pub struct Swarm {
    pub scenario: Scenario,
    pub seed: u64,
    /// Nodes running from the start.
    pub nodes: usize,
    /// Nodes that join later (scale-out), numbered after the first `nodes`.
    pub joiners: Vec<(usize, Duration)>,
    /// Nodes that leave gracefully, and when.
    pub leavers: Vec<(usize, Duration)>,
    pub vnodes: u32,
    pub lease_ttl: Duration,
    pub hot_ttl: Duration,
    pub main_ttl: Duration,
    /// Main cache bytes per node.
    pub capacity: u64,
    /// Whether every key fits in one node's main cache (no evictions expected).
    pub roomy: bool,
    pub keys: usize,
    /// Zipf exponent, or uniform keys.
    pub zipf: Option<f64>,
    /// Percent of Gets, Sets (the rest are Removes).
    pub mix: (u32, u32),
    pub clients: usize,
    pub workers: usize,
    pub think: Duration,
    pub value_size: usize,
    pub latency: (Duration, Duration),
    pub db_latency: (Duration, Duration),
    pub db_fail: f64,
    /// The group's deadline for one request.
    pub timeout: Duration,
    /// Clients start after this (the cluster has formed).
    pub warmup: Duration,
    /// Clients run until this.
    pub workload_end: Duration,
    /// The faults and membership actions, in time order.
    pub plan: Vec<(Duration, Action)>,
}

impl Swarm {
    /// Draws every parameter of `scenario` from `seed`.
    pub fn draw(scenario: Scenario, seed: u64) -> Swarm {
        let mut rng =
            SmallRng::seed_from_u64(seed ^ xxhash_rust::xxh3::xxh3_64(scenario.name().as_bytes()));
        let nodes = rng.random_range(3..=7);
        let keys = rng.random_range(20..=200);
        let value_size = rng.random_range(16..=200);
        // Key, value and the store's per-entry overhead, generously.
        let entry = (value_size + 8 + 160) as u64;
        let roomy = rng.random_bool(0.7);
        let capacity = if roomy {
            keys as u64 * entry * 4
        } else {
            (keys as u64 * entry / 4).max(16 << 10)
        };
        let get = rng.random_range(70..=95);
        let set = rng.random_range(0..=100 - get);
        let wide = scenario == Scenario::LatencySpread;
        let max_latency = if wide {
            Duration::from_millis(rng.random_range(100..=400))
        } else {
            Duration::from_millis(rng.random_range(2..=20))
        };
        let mut swarm = Swarm {
            scenario,
            seed,
            nodes,
            joiners: vec![],
            leavers: vec![],
            vnodes: [20, 50, 100, 160][rng.random_range(0..4)],
            lease_ttl: Duration::from_millis(rng.random_range(2000..=4000)),
            hot_ttl: Duration::from_millis(rng.random_range(1000..=4000)),
            main_ttl: Duration::from_secs(rng.random_range(120..=300)),
            capacity,
            roomy,
            keys,
            zipf: rng.random_bool(0.5).then(|| rng.random_range(0.6..1.2)),
            mix: (get, set),
            clients: rng.random_range(2..=3),
            workers: rng.random_range(1..=3),
            think: Duration::from_millis(rng.random_range(10..=100)),
            value_size,
            latency: (Duration::from_millis(1), max_latency),
            db_latency: (
                Duration::from_millis(1),
                Duration::from_millis(rng.random_range(1..=30)),
            ),
            db_fail: if rng.random_bool(0.2) {
                rng.random_range(0.01..0.05)
            } else {
                0.0
            },
            timeout: if wide {
                Duration::from_secs(5)
            } else {
                Duration::from_secs(2)
            },
            warmup: Duration::from_secs(4),
            workload_end: Duration::from_secs(34),
            plan: vec![],
        };
        let n = swarm.nodes;
        swarm.plan = plan(&mut rng, &mut swarm, scenario, n);
        swarm.plan.sort_by_key(|(at, _)| *at);
        swarm
    }

    /// Node hosts in the simulation, joiners included.
    pub fn hosts(&self) -> usize {
        self.nodes + self.joiners.len()
    }

    pub fn start_at(&self, i: usize) -> Duration {
        self.joiners
            .iter()
            .find(|(j, _)| *j == i)
            .map_or(Duration::ZERO, |(_, at)| *at)
    }

    fn leave_at(&self, i: usize) -> Option<Duration> {
        self.leavers
            .iter()
            .find(|(j, _)| *j == i)
            .map(|(_, at)| *at)
    }

    /// Nodes clients may send to at `at`: started and not (about to be) gone.
    pub fn targets(&self, at: Duration) -> Vec<usize> {
        (0..self.hosts())
            .filter(|&i| self.start_at(i) <= at)
            .filter(|&i| {
                self.leave_at(i)
                    .is_none_or(|l| at + Duration::from_millis(500) < l)
            })
            .collect()
    }

    /// Every host of the simulation.
    pub fn all_hosts(&self) -> Vec<String> {
        let mut hosts = vec![db::DB_HOST.to_owned(), membership::REGISTRY_HOST.to_owned()];
        hosts.extend((0..self.hosts()).map(host_name));
        hosts.extend((0..self.clients).map(client::host_name_of));
        hosts
    }

    /// When the workload (and the run) ends.
    pub fn end(&self) -> Duration {
        self.workload_end
    }

    /// The last fault healed (or the workload started, without faults).
    pub fn healed(&self) -> Duration {
        self.plan
            .iter()
            .map(|(at, _)| *at)
            .max()
            .unwrap_or(self.warmup)
            .max(self.warmup)
    }

    /// By when the cluster must have recovered after the last fault healed: a lost
    /// lease is noticed within one TTL, re-registration and the watch take a few
    /// backoff rounds more.
    pub fn recovered(&self) -> Duration {
        self.healed() + self.lease_ttl * 2 + Duration::from_secs(3)
    }

    pub fn load_timeout(&self) -> Duration {
        self.timeout / 2
    }

    /// A client gives up after the node's deadline plus two network trips.
    pub fn client_timeout(&self) -> Duration {
        self.timeout + self.latency.1 * 4 + Duration::from_millis(500)
    }

    /// How long after an acknowledged write a Get may still return the previous value:
    /// a hot copy that missed its invalidation lives one hot TTL; a value loaded while
    /// the owner was unreachable lives one fallback TTL (shorter).
    pub fn staleness_bound(&self) -> Duration {
        self.hot_ttl + self.latency.1 * 4 + Duration::from_millis(100)
    }
}

/// Two distinct nodes among the first `n`.
fn two(rng: &mut SmallRng, n: usize) -> (usize, usize) {
    let a = rng.random_range(0..n);
    let b = (a + rng.random_range(1..n)) % n;
    (a, b)
}

fn at(rng: &mut SmallRng, from: u64, to: u64) -> Duration {
    Duration::from_millis(rng.random_range(from..=to))
}

/// The fault schedule of one scenario. Faults start after the warmup and heal at least
/// 14 s before the workload ends, so the recovery can be judged. Faults that pick nodes
/// pick among the first `n`.
fn plan(rng: &mut SmallRng, s: &mut Swarm, kind: Scenario, n: usize) -> Vec<(Duration, Action)> {
    let first = s.warmup.as_millis() as u64 + 2000;
    let last_heal = s.workload_end.as_millis() as u64 - 14_000;
    let ttl = s.lease_ttl.as_millis() as u64;
    let mut plan = vec![];
    let registry = membership::REGISTRY_HOST.to_owned();
    let window = |rng: &mut SmallRng, min: u64| {
        let from = at(rng, first, last_heal - min);
        (from, at(rng, from.as_millis() as u64 + min, last_heal))
    };
    match kind {
        Scenario::SteadyState | Scenario::LatencySpread => {}
        Scenario::Partition => {
            for _ in 0..rng.random_range(1..=2) {
                let (a, b) = two(rng, n);
                let (from, to) = window(rng, 1000);
                plan.push((from, Action::Partition(host_name(a), host_name(b))));
                plan.push((to, Action::Repair(host_name(a), host_name(b))));
            }
        }
        Scenario::OneWayPartition => {
            let (a, b) = two(rng, n);
            let (from, to) = window(rng, 1000);
            plan.push((from, Action::PartitionOneway(host_name(a), host_name(b))));
            plan.push((to, Action::RepairOneway(host_name(a), host_name(b))));
        }
        Scenario::RegistryPartition => {
            // Longer than two leases: the node drops out, then rejoins after the heal.
            let a = rng.random_range(0..n);
            let (from, to) = window(rng, 2 * ttl);
            plan.push((from, Action::Partition(host_name(a), registry.clone())));
            plan.push((to, Action::Repair(host_name(a), registry)));
        }
        Scenario::ClientPartition => {
            let client = client::host_name_of(rng.random_range(0..s.clients));
            let a = rng.random_range(0..n);
            let (from, to) = window(rng, 1000);
            plan.push((from, Action::Partition(client.clone(), host_name(a))));
            plan.push((to, Action::Repair(client, host_name(a))));
        }
        Scenario::RegistryHold => {
            // Two nodes stop hearing from the registry for longer than a lease while a
            // new node joins: their leases lapse and the others drop them, but they keep
            // their last view (themselves included) and never see the joiner, so they and
            // the joiner each own some keys in their own views.
            let (a, b) = two(rng, n);
            let (from, to) = window(rng, ttl + 1000);
            for x in [a, b] {
                plan.push((from, Action::Hold(host_name(x), registry.clone())));
                plan.push((to, Action::Release(host_name(x), registry.clone())));
            }
            let joiner = s.hosts();
            let join = from + Duration::from_millis(500);
            s.joiners.push((joiner, join));
            plan.push((join, Action::Join(joiner)));
        }
        Scenario::MessageLoss => {
            let (from, to) = window(rng, 3000);
            plan.push((from, Action::Loss(rng.random_range(0.0005..0.005))));
            plan.push((to, Action::Loss(0.0)));
        }
        Scenario::CrashBounce => {
            let crashes = if n > 1 { rng.random_range(1..=2) } else { 1 };
            let (a, b) = if n > 1 { two(rng, n) } else { (0, 0) };
            for x in [a, b].into_iter().take(crashes) {
                let (from, to) = window(rng, 500);
                plan.push((from, Action::Crash(x)));
                plan.push((to, Action::Bounce(x)));
            }
        }
        Scenario::ScaleOut => {
            for _ in 0..rng.random_range(1..=2) {
                let joiner = s.hosts();
                let join = at(rng, first, last_heal);
                s.joiners.push((joiner, join));
                plan.push((join, Action::Join(joiner)));
            }
        }
        Scenario::GracefulLeave => {
            // The last eligible node: the others' faults pick among the ones before it.
            let a = n - 1;
            let when = at(rng, first, last_heal);
            s.leavers.push((a, when));
            plan.push((when, Action::Leave(a)));
        }
        Scenario::Swarm => {
            // A mix of two to four different faults.
            let kinds = [
                Scenario::Partition,
                Scenario::OneWayPartition,
                Scenario::RegistryPartition,
                Scenario::ClientPartition,
                Scenario::RegistryHold,
                Scenario::MessageLoss,
                Scenario::CrashBounce,
                Scenario::ScaleOut,
                Scenario::GracefulLeave,
            ];
            let count = rng.random_range(2..=4);
            let mut picked = vec![];
            while picked.len() < count {
                let k = kinds[rng.random_range(0..kinds.len())];
                if !picked.contains(&k) {
                    picked.push(k);
                }
            }
            // The leaver is node n-1; every other fault stays off it.
            let others = if picked.contains(&Scenario::GracefulLeave) {
                n - 1
            } else {
                n
            };
            for k in picked {
                let eligible = if k == Scenario::GracefulLeave {
                    n
                } else {
                    others
                };
                plan.append(&mut self::plan(rng, s, k, eligible));
            }
        }
    }
    plan
}

/// What one seed produced, and what it cost.
pub struct Run {
    pub swarm: Swarm,
    pub history: History,
    pub wall: Duration,
}

/// Runs one seed of `scenario`.
pub fn run(scenario: Scenario, seed: u64) -> Run {
    crate::init_logging();
    let swarm = Swarm::draw(scenario, seed);
    let started = Instant::now();
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .tick_duration(TICK)
        .simulation_duration(swarm.end() + Duration::from_secs(60))
        .min_message_latency(swarm.latency.0)
        .max_message_latency(swarm.latency.1)
        // turmoil breaks and repairs links as messages are sent: a randomly broken link
        // drops what is in flight on it and heals on one of the next few messages.
        .repair_rate(0.5)
        .tcp_capacity(4096)
        .build();
    let db = Db::new(
        DbConfig {
            value_size: swarm.value_size,
            latency: swarm.db_latency,
            fail_rate: swarm.db_fail,
        },
        seed,
    );
    let served = db.clone();
    sim.host(db::DB_HOST, move || db::serve(served.clone()));
    membership::add_registry(&mut sim, &swarm);
    let nodes = Nodes::default();
    for i in 0..swarm.hosts() {
        sim.host(
            host_name(i),
            node::software(i, swarm.clone(), nodes.clone()),
        );
    }
    let ops = Arc::new(Mutex::new(Vec::new()));
    for c in 0..swarm.clients {
        sim.client(
            client::host_name_of(c),
            client::run(c, swarm.clone(), db.clone(), ops.clone()),
        );
    }

    let mut history = History::default();
    let mut plan = swarm.plan.iter().peekable();
    let mut next_sample = Duration::ZERO;
    let mut links = Links::default();
    loop {
        let done = match sim.step() {
            Ok(done) => done,
            Err(e) => panic!(
                "sim: scenario={} seed={seed}: a host failed: {e}\n{}",
                scenario.name(),
                crate::replay_command(&format!("scenarios::{}", scenario.name()), seed)
            ),
        };
        let now = sim.elapsed();
        while let Some((at, action)) = plan.next_if(|(at, _)| *at <= now) {
            apply(&mut sim, &swarm, &nodes, &mut links, action);
            history.faults.push(Applied {
                at: *at,
                what: format!("{action:?}"),
            });
        }
        if now >= next_sample {
            sample(&nodes, now, &mut history.samples);
            next_sample += SAMPLE_EVERY;
        }
        if done {
            break;
        }
    }
    history.ops = std::mem::take(&mut *ops.lock().unwrap());
    history.ops.sort_by_key(|o| (o.end, o.start, o.worker));
    history.loads = db.lock().unwrap().take_loads();
    for (i, registry) in nodes.registries.lock().unwrap().iter() {
        let g = registry.get(node::GROUP).expect("group");
        let s = g.stats();
        history.counters.insert(
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
    Run {
        swarm,
        history,
        wall: started.elapsed(),
    }
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
        let Ok(g) = registry.get(node::GROUP) else {
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
