//! Everything one seed decides about a run of a scenario: the cluster's shape, timings,
//! workload and faults, drawn from the seed alone.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use peercache::HotConfig;
use peercache::buggify::{Bug, Delays};

use super::db::DbLoader;
use super::group::GroupSpec;
use super::membership::Lease;
use super::node::{NodeSpec, Peers, advertise, host_name};
use super::plan::plan;
use super::rogue::{ROGUE_HOST, RogueSpec, choose_id};
use super::scenario::Scenario;
use super::tls::{PeerTls, node_tls};
use super::{Action, client, db, membership};

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
    /// Delays at the node's risky points (BUGGIFY), if this swarm has them.
    pub delays: Option<Delays>,
    /// Chance that a write goes to one of its writer's hottest keys.
    pub hot_writes: f64,
    /// A bug planted in the node for this run (`SIM_BUG=<name>`).
    pub bug: Option<Bug>,
    /// Clients speak the Redis protocol instead of HTTP (set by the `_resp` tests, never
    /// drawn, so every seed's draw stays as it was).
    pub resp: bool,
    /// Values compressed so, every length: kept compressed, or only on the wire (set
    /// by the `_compressed` tests, never drawn).
    pub compress: Option<peercache::group::Compression>,
    /// Whether the nodes talk to each other over mutual TLS.
    pub tls: PeerTls,
    /// When the rogue host is in the registry (joins, leaves), if there is one.
    pub rogue: Option<(Duration, Duration)>,
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
            delays: None,
            hot_writes: 0.0,
            bug: planted_bug(),
            resp: false,
            compress: None,
            tls: PeerTls::Off,
            rogue: None,
        };
        let n = swarm.nodes;
        swarm.plan = plan(&mut rng, &mut swarm, scenario, n);
        // Drawn from a second stream, so adding them left the rest of every seed's
        // swarm as it was.
        let mut extra = SmallRng::seed_from_u64(
            seed ^ 0xB066_1F1E ^ xxhash_rust::xxh3::xxh3_64(scenario.name().as_bytes()),
        );
        swarm.delays = extra.random_bool(0.8).then(|| Delays {
            seed: extra.random(),
            rate: extra.random_range(0.02..0.3),
            max: Duration::from_millis(extra.random_range(5..=200)),
        });
        if extra.random_bool(0.5) {
            swarm.hot_writes = extra.random_range(0.3..0.9);
        }
        if scenario == Scenario::Swarm && extra.random_bool(0.3) {
            // The leaver, if any, is node n-1: the stall stays off it.
            let eligible = if swarm.leavers.is_empty() { n } else { n - 1 };
            let mut stalls = plan(&mut extra, &mut swarm, Scenario::Stall, eligible);
            swarm.plan.append(&mut stalls);
        }
        // A third stream, drawn last, for the same reason.
        let mut third = SmallRng::seed_from_u64(
            seed ^ 0x7150_3A17 ^ xxhash_rust::xxh3::xxh3_64(scenario.name().as_bytes()),
        );
        let mutual = match scenario {
            // The rogue is judged by what mutual TLS keeps out.
            Scenario::RogueHost => true,
            Scenario::Swarm => third.random_bool(0.3),
            _ => false,
        };
        swarm.tls = if mutual {
            PeerTls::Mutual
        } else {
            PeerTls::Off
        };
        swarm.plan.sort_by_key(|(at, _)| *at);
        swarm
    }

    /// The swarm with peer TLS set to `tls` (the `*_mtls` tests run plaintext
    /// scenarios' swarms with mutual TLS).
    pub fn with_tls(mut self, tls: PeerTls) -> Swarm {
        self.tls = tls;
        self
    }

    /// The swarm without what was added to the draws later (delays at risky points, hot
    /// writes, stalls, the swarm's mutual TLS), so a seed pinned before then replays the
    /// run it was pinned for.
    pub fn first_drawn(mut self) -> Swarm {
        self.delays = None;
        self.hot_writes = 0.0;
        if self.scenario == Scenario::Swarm {
            self.tls = PeerTls::Off;
        }
        self.plan
            .retain(|(_, a)| !matches!(a, Action::Stall(_) | Action::Unstall(_)));
        self
    }

    /// What the node's hooks do in this run.
    pub fn setup(&self) -> peercache::buggify::Setup {
        peercache::buggify::Setup {
            delays: self.delays,
            bug: self.bug,
        }
    }

    /// Node `i` as this swarm sets it up: its peers from the registry, its misses
    /// loaded from the db host.
    pub fn node(&self, i: usize) -> NodeSpec {
        let group = GroupSpec {
            capacity: Some(self.capacity),
            ttl: Some((self.main_ttl, 0.1)),
            hot: Some(HotConfig {
                ttl: self.hot_ttl,
                ..HotConfig::default()
            }),
            timeout: Some(self.timeout),
            compress: self.compress,
            ..GroupSpec::new(DbLoader {
                timeout: self.load_timeout(),
            })
        };
        let peers = Peers::Leased(Lease::new(self.lease_ttl));
        NodeSpec {
            start_at: self.start_at(i),
            vnodes: Some(self.vnodes),
            sweep_every: Some(Duration::from_millis(500)),
            peer_tls: (self.tls == PeerTls::Mutual).then(|| node_tls(i)),
            ..NodeSpec::new(i, self.seed, group, peers)
        }
    }

    /// Node hosts in the simulation, joiners included.
    pub fn hosts(&self) -> usize {
        self.nodes + self.joiners.len()
    }

    fn start_at(&self, i: usize) -> Duration {
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
        if self.rogue.is_some() {
            hosts.push(ROGUE_HOST.to_owned());
        }
        hosts
    }

    /// The rogue host as this swarm sets it up, if there is one.
    pub fn rogue_spec(&self) -> Option<RogueSpec> {
        let (joins, leaves) = self.rogue?;
        let nodes: Vec<String> = (0..self.hosts()).map(advertise).collect();
        Some(RogueSpec {
            id: choose_id(&nodes, self.vnodes),
            joins,
            leaves,
            lease_ttl: self.lease_ttl,
            keys: self.keys,
            value_size: self.value_size,
            seed: self.seed,
        })
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

/// The bug `SIM_BUG` names, if any.
pub fn planted_bug() -> Option<Bug> {
    let name = std::env::var("SIM_BUG").ok().filter(|n| !n.is_empty())?;
    let bug = Bug::named(&name).unwrap_or_else(|| {
        let known: Vec<_> = Bug::ALL.iter().map(|b| b.name()).collect();
        panic!("SIM_BUG={name:?} is not a planted bug; known: {known:?}")
    });
    Some(bug)
}
