//! Memory: no node's cache ever holds more bytes than its capacity.

use super::Violation;
use crate::harness::Run;

pub fn check(run: &Run) -> Vec<Violation> {
    let mut out = vec![];
    for s in &run.history.samples {
        if s.main_capacity != run.swarm.capacity {
            out.push(Violation {
                check: "memory",
                what: format!(
                    "node{} main capacity {} is not the configured {}",
                    s.node, s.main_capacity, run.swarm.capacity
                ),
                excerpt: String::new(),
            });
        }
        if s.main_bytes > s.main_capacity || s.hot_bytes > s.hot_capacity {
            out.push(Violation {
                check: "memory",
                what: format!(
                    "node{} at {:.3}s holds main {}/{} bytes, hot {}/{} bytes",
                    s.node,
                    s.at.as_secs_f64(),
                    s.main_bytes,
                    s.main_capacity,
                    s.hot_bytes,
                    s.hot_capacity
                ),
                excerpt: String::new(),
            });
        }
        if out.len() >= 5 {
            break;
        }
    }
    out
}
