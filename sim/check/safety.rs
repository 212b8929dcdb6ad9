//! Safety: every successful Get returns the source's value for that key, at a version no
//! older than the last acknowledged write by more than the staleness bound. Errors are
//! allowed; a wrong value is not.
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
    /// Acknowledged writes: (end, version).
    acked: Vec<(Duration, u64)>,
    /// Writes whose outcome is unknown.
    unknown: BTreeSet<u64>,
    /// Every write: (start, version); the source changed at the start.
    all: Vec<(Duration, u64, &'a Op)>,
}

pub fn check(run: &Run) -> Vec<Violation> {
    let bound = run.swarm.staleness_bound();
    let mut writes: BTreeMap<&str, KeyWrites<'_>> = BTreeMap::new();
    for op in run.history.ops.iter().filter(|o| o.kind != Kind::Get) {
        let w = writes.entry(op.key.as_str()).or_default();
        let v = op.version.expect("writes carry their version");
        w.all.push((op.start, v, op));
        if op.result.is_ok() {
            w.acked.push((op.end, v));
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
        let mut fail = |what: String| {
            out.push(Violation {
                check: "safety",
                what: format!("{what}\n  get: {op}"),
                excerpt: run
                    .history
                    .excerpt(&op.key, op.start, bound + Duration::from_secs(2)),
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
            .filter(|(end, _)| *end + bound <= op.start)
            .map(|(_, v)| *v)
            .max()
            .unwrap_or(0);
        if version < floor && !w.unknown.contains(&version) {
            fail(format!(
                "stale: version {version}, but version {floor} was acknowledged more than {:.3}s before the get",
                bound.as_secs_f64()
            ));
        }
        if out.len() >= 5 {
            break;
        }
    }
    out
}
