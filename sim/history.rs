//! What a run recorded: the clients' operations, the source's loads, the faults applied
//! and periodic samples of every node. Checkers judge this; its hash is the trace.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;

/// One client operation, from the moment the client started it to the answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Op {
    /// Which client worker (`client<i>` host, worker `w`): `i * workers + w`.
    pub worker: usize,
    /// The node the request went to.
    pub node: usize,
    pub kind: Kind,
    pub key: String,
    /// Writes: the source version this write made current.
    pub version: Option<u64>,
    /// Simulated time the client sent it.
    pub start: Duration,
    /// Simulated time the answer arrived (or the client gave up).
    pub end: Duration,
    pub result: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Get,
    Set,
    Remove,
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A Get's value, or a write's acknowledgement (empty).
    Ok(Bytes),
    /// The node answered with an error status.
    Status(u16, String),
    /// The connection failed before an answer (refused, reset).
    Failed(String),
    /// No answer before the client's own timeout.
    NoReply,
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }
}

/// One call of the source, as the db host saw it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Load {
    /// When the request reached the db.
    pub asked: Duration,
    /// When the db answered.
    pub at: Duration,
    pub key: String,
    pub version: u64,
    /// False when the db injected a failure.
    pub ok: bool,
}

/// A fault (or membership action) the harness applied, and when.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Applied {
    pub at: Duration,
    pub what: String,
}

/// One node as sampled by the harness.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sample {
    pub at: Duration,
    pub node: usize,
    /// Member ids in this node's ring.
    pub members: Vec<String>,
    pub main_bytes: u64,
    pub main_capacity: u64,
    pub hot_bytes: u64,
    pub hot_capacity: u64,
}

/// Everything one seed produced.
#[derive(Debug, Default, Clone)]
pub struct History {
    pub ops: Vec<Op>,
    pub loads: Vec<Load>,
    pub faults: Vec<Applied>,
    pub samples: Vec<Sample>,
    /// Node-level counters at the end, per node host: (name, value).
    pub counters: BTreeMap<usize, BTreeMap<&'static str, u64>>,
    /// Every peer get call, as the askers logged them, in the order they ended.
    pub calls: Vec<peercache::buggify::PeerCall>,
    /// What the rogue host did and saw, in runs that have one.
    pub rogue: Option<crate::harness::rogue::RogueLog>,
}

impl History {
    /// A hash of the full event history: the same seed must give the same trace.
    pub fn trace(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let mut feed = |s: String| {
            h.update(s.as_bytes());
            h.update(b"\n");
        };
        for op in &self.ops {
            feed(format!("{op:?}"));
        }
        for load in &self.loads {
            feed(format!("{load:?}"));
        }
        for fault in &self.faults {
            feed(format!("{fault:?}"));
        }
        for sample in &self.samples {
            feed(format!("{sample:?}"));
        }
        for call in &self.calls {
            feed(format!("{call:?}"));
        }
        feed(format!("{:?}", self.counters));
        if let Some(rogue) = &self.rogue {
            feed(format!("{rogue:?}"));
        }
        h.digest()
    }

    /// What happened to `key` between `from` and `to`, for a violation's report.
    pub fn excerpt(&self, key: &str, from: Duration, to: Duration) -> String {
        let mut out = String::new();
        for op in self.ops.iter().filter(|o| o.key == key) {
            if op.end >= from && op.start <= to {
                out.push_str(&format!("    {op}\n"));
            }
        }
        for load in self.loads.iter().filter(|l| l.key == key) {
            if load.at >= from && load.at <= to {
                out.push_str(&format!(
                    "    {:>9.3}s source load {}@{} ok={}\n",
                    load.at.as_secs_f64(),
                    load.key,
                    load.version,
                    load.ok
                ));
            }
        }
        for fault in &self.faults {
            if fault.at >= from && fault.at <= to {
                out.push_str(&format!(
                    "    {:>9.3}s fault {}\n",
                    fault.at.as_secs_f64(),
                    fault.what
                ));
            }
        }
        out
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let result = match &self.result {
            Outcome::Ok(v) => {
                let v = String::from_utf8_lossy(v);
                let short: String = v.chars().take(24).collect();
                format!("ok {short:?}")
            }
            Outcome::Status(code, msg) => format!("{code} {msg}"),
            Outcome::Failed(e) => format!("failed: {e}"),
            Outcome::NoReply => "no reply".into(),
        };
        write!(
            f,
            "{:>9.3}s..{:>9.3}s worker{} node{} {:?} {}{} -> {}",
            self.start.as_secs_f64(),
            self.end.as_secs_f64(),
            self.worker,
            self.node,
            self.kind,
            self.key,
            self.version.map(|v| format!("@{v}")).unwrap_or_default(),
            result
        )
    }
}
