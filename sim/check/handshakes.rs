//! Mutual TLS among the cluster's own hosts: peers did talk through their handshakes
//! (some values were fetched from their owners), and in a run without faults no
//! handshake failed on either side. Faults may cut a handshake short (a crash, a
//! partition past the handshake timeout), and the rogue's are the rogue checker's.

use super::Violation;
use crate::harness::{PeerTls, Run};

pub fn check(run: &Run) -> Vec<Violation> {
    if run.swarm.tls != PeerTls::Mutual {
        return vec![];
    }
    let counters = &run.history.counters;
    let total = |name: &str| -> u64 {
        counters
            .values()
            .map(|c| c.get(name).copied().unwrap_or(0))
            .sum()
    };
    let mut out = vec![];
    let mut violation = |what: String| {
        out.push(Violation {
            check: "handshakes",
            what,
            excerpt: String::new(),
        })
    };
    if total("peer_loads") == 0 {
        violation("with mutual TLS no value was ever fetched from its owner".into());
    }
    let with_tls = counters
        .values()
        .filter(|c| c.contains_key("tls_refused_incoming"))
        .count();
    if with_tls != run.swarm.hosts() {
        violation(format!(
            "{with_tls} of {} nodes ran with mutual TLS",
            run.swarm.hosts()
        ));
    }
    if run.swarm.plan.is_empty() {
        let refused: Vec<_> = counters
            .iter()
            .filter_map(|(node, c)| {
                let (i, o) = (
                    c.get("tls_refused_incoming")?,
                    c.get("tls_refused_outgoing")?,
                );
                (*i + *o > 0).then(|| format!("node{node}: {i} incoming, {o} outgoing"))
            })
            .collect();
        if !refused.is_empty() {
            violation(format!(
                "handshakes between the cluster's own nodes failed in a run without faults: {}",
                refused.join("; ")
            ));
        }
    }
    out
}
