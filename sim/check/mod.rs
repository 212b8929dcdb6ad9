//! Checkers: each judges one property of a run's history. A violation names what broke
//! and carries the history around it.

pub mod determinism;
pub mod efficiency;
pub mod faults;
pub mod handshakes;
pub mod liveness;
pub mod memory;
pub mod rogue;
pub mod safety;

use std::fmt;

use std::time::Duration;

use crate::harness::{Run, Scenario, Swarm};

/// One broken property.
#[derive(Debug)]
pub struct Violation {
    pub check: &'static str,
    pub what: String,
    /// The relevant part of the history.
    pub excerpt: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[{}] {}", self.check, self.what)?;
        if !self.excerpt.is_empty() {
            write!(f, "{}", self.excerpt)?;
        }
        Ok(())
    }
}

/// Every checker but determinism (which needs a second run).
pub fn all(run: &Run) -> Vec<Violation> {
    if let Some(why) = &run.aborted {
        // The history stops midway: judging it would report what the cut left undone.
        return vec![Violation {
            check: "budget",
            what: why.clone(),
            excerpt: String::new(),
        }];
    }
    let mut out = safety::check(run).violations;
    out.extend(liveness::check(run));
    out.extend(efficiency::check(run).violations);
    out.extend(memory::check(run));
    out.extend(handshakes::check(run));
    out.extend(rogue::check(run));
    out
}

/// A run that outlives its wall-clock budget stops there and fails with the same report
/// as any violation, instead of running on (a planted membership bug once ran for more
/// than ten minutes).
#[test]
fn a_run_past_its_budget_fails_with_a_report() {
    let swarm = Swarm::draw(Scenario::SteadyState, 1);
    let run = crate::harness::run_within(swarm, Duration::ZERO);
    let why = run.aborted.as_deref().expect("the run stops at once");
    assert!(why.contains("wall-clock"), "{why}");
    let violations = all(&run);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].check, "budget");
}
