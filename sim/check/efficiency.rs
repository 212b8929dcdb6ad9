//! Efficiency: while membership is stable, the source is loaded at most once per key and
//! version cluster-wide; under churn the excess is reported.
//!
//! Stable phases: from the warmup to the first fault, and from the recovery bound to the
//! end. A write to the key between two loads makes them different fills (a load that
//! raced a write is rightly dropped, and the key loaded again), so loads are counted per
//! (key, version, writes to the key completed so far). Only runs whose keys all fit in a node's cache are held to it (otherwise
//! evictions legitimately reload).

use std::collections::BTreeMap;
use std::time::Duration;

use super::Violation;
use crate::harness::Run;
use crate::history::Kind;

/// Loads of the whole run.
#[derive(Debug, Default)]
pub struct Efficiency {
    /// Successful source loads.
    pub loads: u64,
    /// Distinct (key, version) pairs loaded.
    pub distinct: u64,
    /// Loads beyond one per (key, version) in stable phases.
    pub stable_excess: u64,
    pub violations: Vec<Violation>,
}

pub fn check(run: &Run) -> Efficiency {
    let swarm = &run.swarm;
    let first_fault = swarm.plan.first().map_or(swarm.end(), |(at, _)| *at);
    let windows = [
        (swarm.warmup, first_fault),
        (
            swarm.recovered().max(swarm.warmup),
            swarm.end() + Duration::from_secs(60),
        ),
    ];
    let mut write_ends: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for op in run.history.ops.iter().filter(|o| o.kind != Kind::Get) {
        write_ends.entry(&op.key).or_default().push(op.end);
    }
    let writes_before = |key: &str, at: Duration| {
        write_ends
            .get(key)
            .map_or(0, |ends| ends.iter().filter(|e| **e <= at).count())
    };
    let mut all: BTreeMap<(&str, u64), u64> = BTreeMap::new();
    let mut stable: BTreeMap<(usize, &str, u64, usize), Vec<Duration>> = BTreeMap::new();
    for load in run.history.loads.iter().filter(|l| l.ok) {
        *all.entry((&load.key, load.version)).or_default() += 1;
        let window = windows
            .iter()
            .position(|(from, to)| load.at >= *from && load.at < *to);
        if let Some(w) = window {
            let epoch = writes_before(&load.key, load.at);
            stable
                .entry((w, &load.key, load.version, epoch))
                .or_default()
                .push(load.at);
        }
    }
    let mut e = Efficiency {
        loads: all.values().sum(),
        distinct: all.len() as u64,
        ..Efficiency::default()
    };
    let total = |name: &str| -> u64 {
        run.history
            .counters
            .values()
            .map(|c| c.get(name).copied().unwrap_or(0))
            .sum()
    };
    let (evictions, refused) = (total("evictions"), total("stale_rejections"));
    for ((_, key, version, _), times) in &stable {
        let extra = times.len() as u64 - 1;
        e.stable_excess += extra;
        if extra > 0 && swarm.roomy && e.violations.len() < 5 {
            e.violations.push(Violation {
                check: "efficiency",
                what: format!(
                    "{key}@{version} loaded {} times while membership was stable (at {:?}); \
                     evictions {evictions}, refused fills {refused}",
                    times.len(),
                    times
                        .iter()
                        .map(|t| format!("{:.3}s", t.as_secs_f64()))
                        .collect::<Vec<_>>()
                ),
                excerpt: run.history.excerpt(
                    key,
                    times[0].saturating_sub(Duration::from_secs(2)),
                    times[times.len() - 1] + Duration::from_secs(1),
                ),
            });
        }
    }
    e
}
