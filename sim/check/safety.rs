//! Safety: every successful Get returns the source's value for that key, at a version no
//! older than the last acknowledged write by more than the staleness bound. Errors are
//! allowed; a wrong value is not.
//!
//! The bound is one hot TTL (plus network time) counted from the later of the write's
//! acknowledgement and the moment all nodes' views of the membership agree again: while
//! views disagree, a write reaches only the members its owner knows, and the others
//! hear of it when they appear in the owner's view.
//!
//! A write that failed (error or no answer) may still have taken effect, at any later
//! time: its version is always an acceptable answer (Jepsen's indeterminate operations).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::Violation;
use crate::harness::Run;
use crate::harness::db::{parse_value, value_of};
use crate::history::{Kind, Op, Outcome};

#[derive(Default)]
struct KeyWrites<'a> {
    /// Acknowledged writes: (when it must be visible, version).
    acked: Vec<(Duration, u64)>,
    /// Writes whose outcome is unknown.
    unknown: BTreeSet<u64>,
    /// Every write: (start, version); the source changed at the start.
    all: Vec<(Duration, u64, &'a Op)>,
}

/// Sample times at which every sampled node had the same view, in order.
fn agreements(run: &Run) -> Vec<Duration> {
    let samples = &run.history.samples;
    let mut out = vec![];
    let mut i = 0;
    while i < samples.len() {
        let at = samples[i].at;
        let n = samples[i..].iter().take_while(|s| s.at == at).count();
        let same = &samples[i..i + n];
        if same.iter().all(|s| s.members == same[0].members) {
            out.push(at);
        }
        i += n;
    }
    out
}

pub fn check(run: &Run) -> Vec<Violation> {
    let bound = run.swarm.staleness_bound();
    let agreed = agreements(run);
    // When a write acknowledged at `end` must be visible everywhere.
    let visible_by = |end: Duration| {
        let settled = agreed
            .iter()
            .find(|at| **at >= end)
            .copied()
            .unwrap_or(Duration::MAX);
        settled.saturating_add(bound)
    };
    let mut writes: BTreeMap<&str, KeyWrites<'_>> = BTreeMap::new();
    for op in run.history.ops.iter().filter(|o| o.kind != Kind::Get) {
        let w = writes.entry(op.key.as_str()).or_default();
        let v = op.version.expect("writes carry their version");
        w.all.push((op.start, v, op));
        if op.result.is_ok() {
            w.acked.push((visible_by(op.end), v));
        } else {
            w.unknown.insert(v);
        }
    }
    let empty = KeyWrites::default();
    let mut out = vec![];
    for op in &run.history.ops {
        let (Kind::Get, Outcome::Ok(value)) = (op.kind, &op.result) else {
            continue;
        };
        let w = writes.get(op.key.as_str()).unwrap_or(&empty);
        // From a little before the last write the get had to see.
        let since = w
            .acked
            .iter()
            .filter(|(by, _)| *by <= op.start)
            .map(|(by, _)| *by)
            .max()
            .unwrap_or(op.start)
            .saturating_sub(bound);
        let mut fail = |what: String| {
            out.push(Violation {
                check: "safety",
                what: format!("{what}\n  get: {op}"),
                excerpt: run.history.excerpt(
                    &op.key,
                    since.saturating_sub(Duration::from_secs(2)),
                    op.end,
                ),
            })
        };
        let Some((key, version)) = parse_value(value) else {
            fail("the value is not any source value".into());
            continue;
        };
        if key != op.key {
            fail(format!("another key's value (of {key:?})"));
            continue;
        }
        if *value != value_of(key, version, run.swarm.value_size) {
            fail(format!("the value of {key}@{version} is corrupted"));
            continue;
        }
        let newest = w
            .all
            .iter()
            .filter(|(start, _, _)| *start <= op.end)
            .map(|(_, v, _)| *v)
            .max()
            .unwrap_or(0);
        if version > newest {
            fail(format!(
                "version {version} was never written (newest {newest})"
            ));
            continue;
        }
        let floor = w
            .acked
            .iter()
            .filter(|(by, _)| *by <= op.start)
            .map(|(_, v)| *v)
            .max()
            .unwrap_or(0);
        if version < floor && !w.unknown.contains(&version) {
            fail(format!(
                "stale: version {version}, but version {floor} was acknowledged more than {:.3}s before the get (after views agreed)",
                bound.as_secs_f64()
            ));
        }
        if out.len() >= 5 {
            break;
        }
    }
    out
}
