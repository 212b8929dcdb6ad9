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
//!
//! That bound is the general rule. The strict rule holds where nothing failed: when no
//! fault touched the writer's node, the key's owner or the reader's node between the
//! write's start and the read's start, and every node saw the same members all along, a
//! read that starts a few network latencies after the write's acknowledgement returns
//! the written version or a newer one. The owner acknowledges a write only after every
//! other member confirmed its invalidation (or a second passed), so no copy may survive.
//! A fault touches its hosts for a while after it heals (sim/check/faults.rs): a
//! connection a partition or message loss broke swallows calls until the keep-alive
//! gives up on it, and an invalidation lost there is the general rule's case.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use peercache::{Member, Ring};

use super::Violation;
use super::faults::Faults;
use crate::harness::Run;
use crate::harness::db::{parse_value, value_of};
use crate::harness::node::host_name;
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

/// What the safety rules found.
#[derive(Debug, Default)]
pub struct Safety {
    /// Successful gets judged by the general rule (all of them).
    pub gets: u64,
    /// Gets that had to see some acknowledged write under the strict rule.
    pub strict_gets: u64,
    pub violations: Vec<Violation>,
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

/// The node index of a member id `node<i>:<port>`.
fn index_of(id: &str) -> Option<usize> {
    id.strip_prefix("node")?.split(':').next()?.parse().ok()
}

/// The strict floor of a get: the newest version it must return because an acknowledged
/// write came before it with nothing failing around them (see the module's doc).
struct Strict<'a> {
    run: &'a Run,
    faults: Faults,
    /// Rings by member list, built once.
    rings: std::cell::RefCell<BTreeMap<Vec<String>, Ring>>,
}

impl Strict<'_> {
    fn floor(&self, get: &Op, writes: &KeyWrites<'_>) -> u64 {
        let slack = self.run.swarm.latency.1 * 4;
        writes
            .all
            .iter()
            .filter(|(_, _, w)| w.result.is_ok() && w.end + slack <= get.start)
            .filter(|(_, _, w)| self.nothing_failed(w, get))
            .map(|(_, v, _)| *v)
            .max()
            .unwrap_or(0)
    }

    fn nothing_failed(&self, write: &Op, get: &Op) -> bool {
        let Some(members) = self.faults.agreed(write.start, get.start) else {
            return false;
        };
        let mut rings = self.rings.borrow_mut();
        let ring = rings.entry(members.to_vec()).or_insert_with(|| {
            Ring::new(
                members.iter().map(|m| Member::new(m.as_str(), m.as_str())),
                self.run.swarm.vnodes,
            )
        });
        let Some(owner) = ring.owner(&get.key).and_then(|m| index_of(&m.id)) else {
            return false;
        };
        let hosts = [host_name(write.node), host_name(owner), host_name(get.node)];
        !self.faults.touched(&hosts, write.start, get.start)
    }
}

pub fn check(run: &Run) -> Safety {
    let strict = Strict {
        run,
        faults: Faults::of(run),
        rings: Default::default(),
    };
    let mut safety = Safety::default();
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
    let out = &mut safety.violations;
    for op in &run.history.ops {
        let (Kind::Get, Outcome::Ok(value)) = (op.kind, &op.result) else {
            continue;
        };
        safety.gets += 1;
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
        let strict_floor = strict.floor(op, w);
        if strict_floor > 0 {
            safety.strict_gets += 1;
        }
        if version < strict_floor && !w.unknown.contains(&version) {
            out.push(Violation {
                check: "safety (strict)",
                what: format!(
                    "stale: version {version}, but version {strict_floor} was acknowledged before the get \
                     started, with no fault touching the writer, the owner or the reader and every \
                     view agreeing\n  get: {op}"
                ),
                excerpt: run.history.excerpt(
                    &op.key,
                    op.start.saturating_sub(Duration::from_secs(3)),
                    op.end,
                ),
            });
        }
        if out.len() >= 5 {
            break;
        }
    }
    safety
}
