//! Determinism: the same seed twice gives the identical history.

use super::Violation;
use crate::harness::{Run, run};

/// Runs `first`'s seed again and compares the traces.
pub fn check(first: &Run) -> Option<Violation> {
    let again = run(first.swarm.clone());
    let (a, b) = (first.history.trace(), again.history.trace());
    if a == b {
        return None;
    }
    let diverged = first
        .history
        .ops
        .iter()
        .zip(&again.history.ops)
        .find(|(x, y)| x != y)
        .map(|(x, y)| format!("    first run:  {x}\n    second run: {y}\n"))
        .unwrap_or_else(|| {
            format!(
                "    ops {} vs {}, loads {} vs {}, samples {} vs {}\n",
                first.history.ops.len(),
                again.history.ops.len(),
                first.history.loads.len(),
                again.history.loads.len(),
                first.history.samples.len(),
                again.history.samples.len()
            )
        });
    Some(Violation {
        check: "determinism",
        what: format!("trace {a:016x} on the first run, {b:016x} on the second"),
        excerpt: diverged,
    })
}
