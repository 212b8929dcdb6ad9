//! What a scenario hands to the report: its load's latencies, the nodes' counters and
//! the origin's loads around the load, the checks it made, and its findings.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use crate::run::RunReport;

/// "met" or "missed", for a goal in a note: goals are reported, not checked.
pub fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "missed" }
}

/// Counters of the group summed over nodes (`/v1/stats`).
pub type Counters = BTreeMap<String, u64>;

/// The nodes' counters and the origin's load count at one moment, to subtract from a
/// later one.
pub struct Tally {
    /// The group's counters summed over the nodes counted.
    pub counters: Counters,
    /// Loads the origin had counted.
    pub source_loads: u64,
}

/// A check a scenario makes of its own result.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Check {
    /// What was expected.
    pub what: String,
    /// Whether it held.
    pub passed: bool,
}

/// What one scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Scenario name.
    pub name: String,
    /// What it does.
    pub about: String,
    /// Why it did not run, if it did not.
    pub skipped: Option<String>,
    /// The load and its latencies.
    pub run: Option<RunReport>,
    /// Node counters before and after the load, and the difference.
    pub stats_before: Counters,
    /// See `stats_before`.
    pub stats_after: Counters,
    /// See `stats_before`.
    pub stats_delta: Counters,
    /// Share of the nodes' client gets answered without the origin: 1 - source loads / gets.
    pub hit_ratio: Option<f64>,
    /// Gets a node answered by asking the key's owner.
    pub peer_loads: u64,
    /// Loads the origin counted.
    pub source_loads: u64,
    /// What it checked.
    pub checks: Vec<Check>,
    /// Findings for the report, one sentence each.
    pub notes: Vec<String>,
    /// Scenario-specific numbers.
    pub extra: Value,
}

impl Outcome {
    /// A scenario that has measured nothing yet.
    pub fn new(name: &str, about: &str) -> Outcome {
        Outcome {
            name: name.to_owned(),
            about: about.to_owned(),
            skipped: None,
            run: None,
            stats_before: Counters::new(),
            stats_after: Counters::new(),
            stats_delta: Counters::new(),
            hit_ratio: None,
            peer_loads: 0,
            source_loads: 0,
            checks: Vec::new(),
            notes: Vec::new(),
            extra: json!({}),
        }
    }

    /// Records a check and whether it held.
    pub fn check(&mut self, what: impl Into<String>, passed: bool) {
        self.checks.push(Check {
            what: what.into(),
            passed,
        });
    }

    /// Records the counters and the origin's loads around the load.
    pub fn counted(&mut self, before: Tally, after: Tally) {
        let source_loads = after.source_loads - before.source_loads;
        let delta: Counters = after
            .counters
            .iter()
            .map(|(k, v)| {
                let was = before.counters.get(k).copied().unwrap_or(0);
                (k.clone(), v.saturating_sub(was))
            })
            .collect();
        let gets = delta.get("gets").copied().unwrap_or(0);
        self.hit_ratio = (gets > 0).then(|| 1.0 - source_loads as f64 / gets as f64);
        self.peer_loads = delta.get("peer_loads").copied().unwrap_or(0);
        self.source_loads = source_loads;
        self.stats_before = before.counters;
        self.stats_after = after.counters;
        self.stats_delta = delta;
    }

    /// A counter's growth over the load (0 if no node reported it).
    pub fn delta(&self, counter: &str) -> u64 {
        self.stats_delta.get(counter).copied().unwrap_or(0)
    }

    /// Failed requests of the load.
    pub fn errors(&self) -> u64 {
        self.run.as_ref().map_or(0, |r| r.summary.errors)
    }
}
