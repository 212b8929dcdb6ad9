//! The fault schedule a seed draws for a scenario.

use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;

use super::node::host_name;
use super::scenario::{Action, Scenario};
use super::swarm::Swarm;
use super::{client, membership};

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
pub(super) fn plan(
    rng: &mut SmallRng,
    s: &mut Swarm,
    kind: Scenario,
    n: usize,
) -> Vec<(Duration, Action)> {
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
        Scenario::Stall => {
            // Write-heavy, so writes meet the stall: a stalled owner, invalidations
            // held on their way to a stalled member, answers delivered late.
            if kind == s.scenario {
                let get = rng.random_range(50..=75);
                s.mix = (get, rng.random_range((100 - get) / 2..=100 - get));
            }
            let stalls = if n > 1 { rng.random_range(1..=2) } else { 1 };
            for _ in 0..stalls {
                let x = rng.random_range(0..n);
                let held = s.client_timeout() + Duration::from_millis(rng.random_range(200..=3000));
                let from = at(rng, first, last_heal - held.as_millis() as u64);
                plan.push((from, Action::Stall(x)));
                plan.push((from + held, Action::Unstall(x)));
            }
        }
        Scenario::RogueHost => {
            // Long enough for several rounds of the rogue's calls and for the nodes to
            // route keys to it.
            let (from, to) = window(rng, 6000);
            s.rogue = Some((from, to));
            plan.push((from, Action::RogueJoin));
            plan.push((to, Action::RogueLeave));
        }
        Scenario::Swarm => plan = mix(rng, s, n),
    }
    plan
}

/// The plan of the swarm scenario: a mix of two to four different faults.
fn mix(rng: &mut SmallRng, s: &mut Swarm, n: usize) -> Vec<(Duration, Action)> {
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
    let mut plan = vec![];
    for k in picked {
        let eligible = if k == Scenario::GracefulLeave {
            n
        } else {
            others
        };
        plan.append(&mut self::plan(rng, s, k, eligible));
    }
    plan
}
