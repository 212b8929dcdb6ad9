//! The rogue host (a certificate from another CA) gets nothing served and changes
//! nothing, while the nodes go on serving the keys their rings gave it.
//!
//! - It did take part as far as the registry lets anyone: its record was in every
//!   node's ring, and it made each call of the peer protocol to the nodes with each
//!   credential: its certificate, TLS without one, plaintext (else the run tested
//!   nothing).
//! - Every call it made failed in the transport, none was answered by a node's service,
//!   and the nodes refused at least one handshake per call.
//! - Its own server completed no handshake and received no request: nodes dialling it
//!   refused its certificate (counted on their connect side).
//! - Gets of keys a node's ring gave to it, while it was there, were answered all the
//!   same: the node loads them itself.
//!
//! That its forged values and versions changed nothing is the safety checker's part: a
//! forged value read by a client is a value the source never had.

use std::collections::{BTreeMap, BTreeSet};

use peercache::{Member, Ring};

use super::Violation;
use crate::harness::Run;
use crate::harness::rogue::{Answer, Credential, RogueLog};
use crate::history::{Kind, Op, Outcome, Sample};

pub fn check(run: &Run) -> Vec<Violation> {
    let Some(log) = &run.history.rogue else {
        return vec![];
    };
    let mut problems = vec![];
    took_part(run, log, &mut problems);
    refused(run, log, &mut problems);
    answered_without_it(run, log, &mut problems);
    problems
        .into_iter()
        .map(|what| Violation {
            check: "rogue",
            what,
            excerpt: String::new(),
        })
        .collect()
}

fn took_part(run: &Run, log: &RogueLog, problems: &mut Vec<String>) {
    if log.registered.is_none() {
        problems.push("the rogue never got its record into the registry".into());
    }
    let saw: BTreeSet<usize> = run
        .history
        .samples
        .iter()
        .filter(|s| s.members.contains(&log.id))
        .map(|s| s.node)
        .collect();
    let nodes: BTreeSet<usize> = (0..run.swarm.hosts()).collect();
    if saw != nodes {
        problems.push(format!(
            "only nodes {saw:?} ever had the rogue in their rings, want all of {nodes:?}"
        ));
    }
    for how in Credential::ALL {
        for rpc in crate::harness::rogue::RPCS {
            let made = log.calls.iter().any(|c| c.rpc == rpc && c.how == how);
            if !made {
                problems.push(format!("the rogue made no {rpc} call with {how:?}"));
            }
        }
    }
}

fn refused(run: &Run, log: &RogueLog, problems: &mut Vec<String>) {
    let through: Vec<_> = log
        .calls
        .iter()
        .filter(|c| !matches!(c.answer, Answer::Unreachable(_)))
        .take(5)
        .collect();
    if !through.is_empty() {
        problems.push(format!(
            "calls of the rogue reached a node's service: {through:?}"
        ));
    }
    let total = |name: &str| -> u64 {
        run.history
            .counters
            .values()
            .map(|c| c.get(name).copied().unwrap_or(0))
            .sum()
    };
    let (incoming, outgoing) = (total("tls_refused_incoming"), total("tls_refused_outgoing"));
    let calls = log.calls.len() as u64;
    if incoming < calls {
        problems.push(format!(
            "the nodes refused {incoming} incoming handshakes, fewer than the rogue's {calls} calls"
        ));
    }
    if outgoing == 0 || log.refused_handshakes == 0 {
        problems.push(format!(
            "no node refused the rogue's certificate when dialling it (nodes counted {outgoing}, \
             the rogue's server {})",
            log.refused_handshakes
        ));
    }
    if log.handshakes > 0 || log.requests > 0 {
        problems.push(format!(
            "the rogue's server completed {} handshakes and received {} requests",
            log.handshakes, log.requests
        ));
    }
}

/// Handshakes the nodes refused: (incoming, outgoing).
fn refusals(run: &Run) -> (u64, u64) {
    let total = |name: &str| -> u64 {
        run.history
            .counters
            .values()
            .map(|c| c.get(name).copied().unwrap_or(0))
            .sum()
    };
    (total("tls_refused_incoming"), total("tls_refused_outgoing"))
}

/// What the rogue tried and how the nodes met it, for the test's output.
pub fn summary(run: &Run) -> Option<String> {
    let log = run.history.rogue.as_ref()?;
    let (incoming, outgoing) = refusals(run);
    let tried: Vec<String> = Credential::ALL
        .iter()
        .map(|how| {
            let calls: Vec<_> = log.calls.iter().filter(|c| c.how == *how).collect();
            let first = calls
                .first()
                .map_or(String::new(), |c| format!("{:?}", c.answer));
            format!("{} {how:?} (first {first})", calls.len())
        })
        .collect();
    let gets = gets_of_its_keys(run, &log.id);
    let ok = gets.iter().filter(|op| op.result.is_ok()).count();
    Some(format!(
        "the rogue ({}) made {} calls: {}; the nodes refused {incoming} incoming and {outgoing} outgoing handshakes; \
         its server refused {} handshakes, completed {}, received {} requests; {ok} of {} \
         gets of keys a ring gave it were served",
        log.id,
        log.calls.len(),
        tried.join(", "),
        log.refused_handshakes,
        log.handshakes,
        log.requests,
        gets.len()
    ))
}

/// The node's view at `at`: its latest sample at or before it.
fn view_at(samples: &[Sample], node: usize, at: std::time::Duration) -> Option<&Sample> {
    samples.iter().rfind(|s| s.node == node && s.at <= at)
}

/// The Gets of keys that the ring of the node they went to gave to the rogue `id`.
fn gets_of_its_keys<'a>(run: &'a Run, id: &str) -> Vec<&'a Op> {
    let samples = &run.history.samples;
    let mut rings: BTreeMap<&[String], Ring> = BTreeMap::new();
    let mut owned_by_rogue = |op: &Op| {
        let Some(view) = view_at(samples, op.node, op.start) else {
            return false;
        };
        if !view.members.iter().any(|m| m == id) {
            return false;
        }
        let ring = rings.entry(&view.members).or_insert_with(|| {
            let members = view
                .members
                .iter()
                .map(|m| Member::new(m.as_str(), m.as_str()));
            Ring::new(members, run.swarm.vnodes)
        });
        ring.owner(&op.key).is_some_and(|m| m.id == id)
    };
    run.history
        .ops
        .iter()
        .filter(|op| op.kind == Kind::Get && owned_by_rogue(op))
        .collect()
}

fn answered_without_it(run: &Run, log: &RogueLog, problems: &mut Vec<String>) {
    let gets = gets_of_its_keys(run, &log.id);
    if gets.is_empty() {
        problems.push("no client read a key while a ring gave it to the rogue".into());
    }
    let failed: Vec<&&Op> = gets
        .iter()
        .filter(|op| match &op.result {
            Outcome::Ok(_) => false,
            // The source's own injected failures are passed on, as they must be.
            Outcome::Status(502, msg) => !msg.contains("injected failure"),
            _ => true,
        })
        .collect();
    if !failed.is_empty() {
        let shown: String = failed
            .iter()
            .take(5)
            .map(|op| format!("\n  op: {op}"))
            .collect();
        problems.push(format!(
            "gets of keys a ring gave to the rogue failed ({} of {}):{shown}",
            failed.len(),
            gets.len(),
        ));
    }
}
