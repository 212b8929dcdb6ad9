//! Checkers: each judges one property of a run's history. A violation names what broke
//! and carries the history around it.

pub mod determinism;
pub mod efficiency;
pub mod liveness;
pub mod memory;
pub mod safety;

use std::fmt;

use crate::harness::Run;

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
    let mut out = safety::check(run);
    out.extend(liveness::check(run));
    out.extend(efficiency::check(run).violations);
    out.extend(memory::check(run));
    out
}
