//! Liveness: no operation outlives its deadline; after the last fault heals, every node
//! agrees on the membership within a bound, and Gets succeed again.

use std::collections::BTreeSet;
use std::time::Duration;

use super::Violation;
use crate::harness::client::host_name_of;
use crate::harness::node::{advertise, host_name};
use crate::harness::{Action, Run};
use crate::history::{Op, Outcome};

/// Time for a connection to be noticed broken or re-established after a fault ends.
const GRACE: Duration = Duration::from_millis(1500);

pub fn check(run: &Run) -> Vec<Violation> {
    let mut out = deadlines(run);
    out.extend(membership(run));
    out.extend(recovery(run));
    out
}

/// Intervals during which requests from `client` to `node` may go unanswered: the path
/// between them was cut, the network lost messages, or the node was down.
fn disturbed(run: &Run, op: &Op) -> bool {
    let client = host_name_of(op.worker / run.swarm.workers);
    let node = host_name(op.node);
    let plan = &run.swarm.plan;
    let mut open: Vec<(Duration, &Action)> = vec![];
    let mut windows: Vec<(Duration, Duration)> = vec![];
    for (at, action) in plan {
        let hosts = action.hosts();
        let touches_path = hosts.contains(&client) && hosts.contains(&node);
        let touches_node = hosts == [node.clone()];
        match action {
            Action::Partition(..) | Action::PartitionOneway(..) | Action::Hold(..)
                if touches_path =>
            {
                open.push((*at, action))
            }
            Action::Loss(rate) if *rate > 0.0 => open.push((*at, action)),
            Action::Crash(_) | Action::Leave(_) | Action::Stall(_) if touches_node => {
                open.push((*at, action))
            }
            Action::Repair(..) | Action::RepairOneway(..) | Action::Release(..) if touches_path => {
                if let Some(p) = open.iter().position(|(_, a)| a.hosts() == hosts) {
                    windows.push((open.remove(p).0, *at));
                }
            }
            Action::Loss(_) => {
                if let Some(p) = open.iter().position(|(_, a)| matches!(a, Action::Loss(_))) {
                    windows.push((open.remove(p).0, *at));
                }
            }
            Action::Bounce(_) | Action::Unstall(_) if touches_node => {
                if let Some(p) = open.iter().position(|(_, a)| a.hosts() == hosts) {
                    // A restarted node rejoins before it serves; a stalled one may have
                    // lost its lease.
                    windows.push((open.remove(p).0, *at + run.swarm.lease_ttl * 2));
                }
            }
            _ => {}
        }
    }
    windows.extend(open.iter().map(|(at, _)| (*at, Duration::MAX)));
    windows
        .iter()
        .any(|(from, to)| op.start < to.saturating_add(GRACE) && op.end >= *from)
}

fn deadlines(run: &Run) -> Vec<Violation> {
    // The node answers by its deadline; the client adds two round trips of the network.
    let limit = run.swarm.timeout + run.swarm.latency.1 * 4 + Duration::from_millis(100);
    let mut out = vec![];
    for op in &run.history.ops {
        let took = op.end - op.start;
        let answered = matches!(op.result, Outcome::Ok(_) | Outcome::Status(..));
        // A held link delivers late what it held: the answer too.
        let what = if answered && took > limit && !disturbed(run, op) {
            format!(
                "answered after {:.3}s, past the deadline ({:.3}s)",
                took.as_secs_f64(),
                limit.as_secs_f64()
            )
        } else if !answered && !disturbed(run, op) {
            "no answer, though nothing cut the client off from the node".to_owned()
        } else {
            continue;
        };
        out.push(Violation {
            check: "liveness",
            what: format!("{what}\n  op: {op}"),
            excerpt: run.history.excerpt(
                &op.key,
                op.start.saturating_sub(Duration::from_secs(3)),
                op.end,
            ),
        });
        if out.len() >= 5 {
            break;
        }
    }
    out
}

/// The members every node should see once faults are over.
fn expected(run: &Run) -> BTreeSet<String> {
    let s = &run.swarm;
    (0..s.hosts())
        .filter(|i| !s.leavers.iter().any(|(l, _)| l == i))
        .map(advertise)
        .collect()
}

fn membership(run: &Run) -> Vec<Violation> {
    let want = expected(run);
    let healed = run.swarm.healed();
    let bound = run.swarm.recovered();
    // The last sample time at which some node disagreed.
    let last_disagreement = run
        .history
        .samples
        .iter()
        .filter(|s| s.at >= healed)
        .rfind(|s| s.members.iter().cloned().collect::<BTreeSet<_>>() != want);
    let nodes_seen: BTreeSet<usize> = run
        .history
        .samples
        .iter()
        .filter(|s| s.at >= bound)
        .map(|s| s.node)
        .collect();
    let mut out = vec![];
    if let Some(s) = last_disagreement.filter(|s| s.at > bound) {
        out.push(Violation {
            check: "liveness",
            what: format!(
                "node{} at {:.3}s sees members {:?}, want {:?} by {:.3}s (faults healed at {:.3}s)",
                s.node,
                s.at.as_secs_f64(),
                s.members,
                want,
                bound.as_secs_f64(),
                healed.as_secs_f64()
            ),
            excerpt: String::new(),
        });
    }
    if nodes_seen.len() != want.len() {
        out.push(Violation {
            check: "liveness",
            what: format!(
                "after recovery only nodes {nodes_seen:?} were running, want {} members",
                want.len()
            ),
            excerpt: String::new(),
        });
    }
    out
}

fn recovery(run: &Run) -> Vec<Violation> {
    let bound = run.swarm.recovered();
    let mut out = vec![];
    for op in run.history.ops.iter().filter(|o| o.start >= bound) {
        let fine = match &op.result {
            Outcome::Ok(_) => true,
            // The source's own injected failures are passed on, as they must be.
            Outcome::Status(502, msg) => msg.contains("injected failure"),
            _ => false,
        };
        if !fine {
            out.push(Violation {
                check: "liveness",
                what: format!(
                    "failed after recovery (faults healed at {:.3}s, bound {:.3}s)\n  op: {op}",
                    run.swarm.healed().as_secs_f64(),
                    bound.as_secs_f64()
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
    out
}
