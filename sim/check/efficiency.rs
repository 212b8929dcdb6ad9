//! Efficiency: while membership is stable, the source is loaded at most once per key and
//! version cluster-wide, and a node asks a key's owner once per burst of concurrent gets
//! of it; under churn the excess is reported.
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
    /// Loads from the first fault on of a (key, version) already loaded before it: what
    /// a membership change cost in loads (handoff avoids them).
    pub reloaded: u64,
    /// Misses answered with an entry handed over from a key's previous owner or a
    /// leaving member, or with the new owner's own copy, instead of a load (the nodes
    /// running at the end).
    pub handed: u64,
    /// Peer calls in stable phases.
    pub calls: u64,
    /// Distinct (asker, key, version) among them.
    pub call_keys: u64,
    /// Stable-phase calls made while the same node's call for the same key to the same
    /// owner was still in flight, with no write to the key in between.
    pub duplicate_calls: u64,
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
    e.handed = total("handoff_hits") + total("copies_promoted");
    let before: std::collections::BTreeSet<(&str, u64)> = (run.history.loads.iter())
        .filter(|l| l.ok && l.at < first_fault)
        .map(|l| (l.key.as_str(), l.version))
        .collect();
    e.reloaded = (run.history.loads.iter())
        .filter(|l| l.ok && l.at >= first_fault && before.contains(&(l.key.as_str(), l.version)))
        .count() as u64;
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
    calls(run, &windows, &writes, &mut e);
    e
}

/// Counts peer calls in the stable windows, and flags a call made while the same call
/// was in flight: concurrent gets of a key on a node share one call to its owner.
fn calls(
    run: &Run,
    windows: &[(Duration, Duration)],
    writes: &BTreeMap<&str, Vec<(Duration, Duration)>>,
    e: &mut Efficiency,
) {
    let stable = |at: Duration| windows.iter().any(|(from, to)| at >= *from && at < *to);
    // The source's version of `key` at `at`: each write bumped it by one at its start.
    let version = |key: &str, at: Duration| {
        writes
            .get(key)
            .map_or(0, |w| w.iter().filter(|(start, _)| *start <= at).count())
    };
    // A write detaches the key's flights wherever its invalidation (or, on the node it
    // went through, its acknowledgement) arrives: from its start until a network trip
    // after its end.
    let trip = run.swarm.latency.1;
    let written = |key: &str, from: Duration, to: Duration| {
        writes.get(key).is_some_and(|w| {
            w.iter()
                .any(|(start, end)| *start <= to && *end + trip >= from)
        })
    };
    let mut by_asker: BTreeMap<(&str, &str), Vec<&peercache::buggify::PeerCall>> = BTreeMap::new();
    let mut keys = std::collections::BTreeSet::new();
    for call in run.history.calls.iter().filter(|c| stable(c.start)) {
        e.calls += 1;
        keys.insert((&call.from, &call.key, version(&call.key, call.start)));
        by_asker
            .entry((&call.from, &call.key))
            .or_default()
            .push(call);
    }
    e.call_keys = keys.len() as u64;
    for ((from, key), mut calls) in by_asker {
        calls.sort_by_key(|c| (c.start, c.end));
        for (i, later) in calls.iter().enumerate() {
            let Some(earlier) = calls[..i].iter().find(|c| {
                c.to == later.to && c.end > later.start && !written(key, c.start, later.start)
            }) else {
                continue;
            };
            e.duplicate_calls += 1;
            if e.violations.len() < 5 {
                e.violations.push(Violation {
                    check: "efficiency",
                    what: format!(
                        "{from} called {} for {key} at {:.3}s while its call of {:.3}s was in flight \
                         (membership stable, no write in flight in between)",
                        later.to,
                        later.start.as_secs_f64(),
                        earlier.start.as_secs_f64()
                    ),
                    excerpt: run.history.excerpt(
                        key,
                        earlier.start.saturating_sub(Duration::from_secs(1)),
                        later.end,
                    ),
                });
            }
        }
    }
}
