//! Efficiency: while membership is stable, the source is loaded at most once per key and
//! version cluster-wide; under churn the excess is reported.
//!
//! Stable phases: from the warmup to the first fault, and from the recovery bound to the
//! end. A later load of the same key and version is excess only if no write to the key
//! was in flight between the two: a fill that raced a write is rightly dropped (the
//! cache cannot tell it read the new version), and the key loads again. Only runs whose
//! keys all fit in a node's cache are held to it (otherwise evictions legitimately
//! reload).

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
    let mut writes: BTreeMap<&str, Vec<(Duration, Duration)>> = BTreeMap::new();
    for op in run.history.ops.iter().filter(|o| o.kind != Kind::Get) {
        writes.entry(&op.key).or_default().push((op.start, op.end));
    }
    // Whether a write to `key` was in flight at some moment of [from, to].
    let written = |key: &str, from: Duration, to: Duration| {
        writes
            .get(key)
            .is_some_and(|w| w.iter().any(|(start, end)| *start <= to && *end >= from))
    };
    let mut all: BTreeMap<(&str, u64), u64> = BTreeMap::new();
    // Each load as (asked, answered), by (window, key, version).
    type Loads<'a> = BTreeMap<(usize, &'a str, u64), Vec<(Duration, Duration)>>;
    let mut stable = Loads::new();
    for load in run.history.loads.iter().filter(|l| l.ok) {
        *all.entry((&load.key, load.version)).or_default() += 1;
        let window = windows
            .iter()
            .position(|(from, to)| load.at >= *from && load.at < *to);
        if let Some(w) = window {
            stable
                .entry((w, &load.key, load.version))
                .or_default()
                .push((load.asked, load.at));
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
    for ((_, key, version), times) in &stable {
        let extra = times
            .windows(2)
            // From a network trip before the first load asked (its fill started then).
            .filter(|pair| !written(key, pair[0].0.saturating_sub(swarm.latency.1), pair[1].1))
            .count() as u64;
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
                        .map(|t| format!("{:.3}s", t.1.as_secs_f64()))
                        .collect::<Vec<_>>()
                ),
                excerpt: run.history.excerpt(
                    key,
                    times[0].0.saturating_sub(Duration::from_secs(2)),
                    times[times.len() - 1].1 + Duration::from_secs(1),
                ),
            });
        }
    }
    e
}
