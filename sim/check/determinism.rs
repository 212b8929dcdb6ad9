//! Determinism: the same seed twice gives the identical history.
//!
//! Runs with mutual TLS are held to it as well. Their handshakes draw keys, nonces and
//! session tickets from the OS, so the bytes on the wire differ between runs, and an
//! ECDSA signature's length by a byte or two; but a handshake takes the same number of
//! writes whatever their content, and turmoil draws a latency per write (segment), so
//! the simulation's random stream, and with it the trace, stays the same. The scenarios'
//! first seeds replay; `SIM_DETERMINISM=1` checked 30 seeds of each TLS test.

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
