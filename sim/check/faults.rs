//! When the faults of a run touched which hosts, and when all nodes' views agreed: what
//! the strict rules need to know that nothing failed around an operation.

use std::time::Duration;

use peercache::net::ChannelTimeouts;

use crate::harness::{Action, Run};

/// After a fault heals, how long its effects may linger: connections noticed broken or
/// re-established, held messages delivered.
const GRACE: Duration = Duration::from_millis(1500);

/// After a fault that dropped messages heals (a partition, message loss, a crash), how
/// long a connection it broke may still swallow calls. turmoil does not retransmit, so a
/// TCP connection that lost a segment stays silently dead until its HTTP/2 keep-alive
/// gives up on it: a ping sent up to one interval after the last answer, unanswered for
/// one timeout (both `keep_alive`). Until then an owner's invalidation on it fails, and
/// the write is acknowledged without it.
fn broken_connections() -> Duration {
    ChannelTimeouts::default().keep_alive * 2 + GRACE
}

/// How often the harness samples the nodes (sim/harness/run.rs).
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The faults of a run as windows per host.
pub struct Faults {
    /// (from, to, hosts touched; empty means every host).
    windows: Vec<(Duration, Duration, Vec<String>)>,
    /// Spans of time during which every sampled node saw the same members: (from, to,
    /// the members).
    agreed: Vec<(Duration, Duration, Vec<String>)>,
}

impl Faults {
    pub fn of(run: &Run) -> Faults {
        let mut windows = vec![];
        let mut open: Vec<(Duration, &Action)> = vec![];
        let rejoin = run.swarm.lease_ttl * 2;
        for (at, action) in &run.swarm.plan {
            let closes = |a: &Action| match (action, a) {
                (Action::Repair(..), Action::Partition(..))
                | (Action::RepairOneway(..), Action::PartitionOneway(..))
                | (Action::Release(..), Action::Hold(..))
                | (Action::Bounce(_), Action::Crash(_))
                | (Action::Unstall(_), Action::Stall(_)) => a.hosts() == action.hosts(),
                (Action::Loss(_), Action::Loss(_)) => true,
                _ => false,
            };
            match action {
                Action::Partition(..)
                | Action::PartitionOneway(..)
                | Action::Hold(..)
                | Action::Crash(_)
                | Action::Stall(_) => open.push((*at, action)),
                Action::Loss(rate) if *rate > 0.0 => open.push((*at, action)),
                Action::Join(_) => windows.push((*at, *at + GRACE, action.hosts())),
                Action::Leave(_) => windows.push((*at, Duration::MAX, action.hosts())),
                _ => {
                    if let Some(p) = open.iter().position(|(_, a)| closes(a)) {
                        let (from, opened) = open.remove(p);
                        let linger = match opened {
                            // A restarted node rejoins before it serves.
                            Action::Crash(_) => (rejoin + GRACE).max(broken_connections()),
                            Action::Partition(..)
                            | Action::PartitionOneway(..)
                            | Action::Loss(_) => broken_connections(),
                            _ => GRACE,
                        };
                        windows.push((from, *at + linger, opened.hosts()));
                    }
                }
            }
        }
        windows.extend(
            open.iter()
                .map(|(from, a)| (*from, Duration::MAX, a.hosts())),
        );
        Faults {
            windows,
            agreed: agreed(run),
        }
    }

    /// Whether a fault touched one of `hosts` at some moment of [from, to].
    pub fn touched(&self, hosts: &[String], from: Duration, to: Duration) -> bool {
        self.windows.iter().any(|(a, b, touched)| {
            *a <= to
                && *b >= from
                && (touched.is_empty() || touched.iter().any(|h| hosts.contains(h)))
        })
    }

    /// The members every node saw throughout [from, to], if they all agreed all along.
    pub fn agreed(&self, from: Duration, to: Duration) -> Option<&[String]> {
        self.agreed
            .iter()
            .find(|(a, b, _)| *a <= from && *b >= to)
            .map(|(_, _, members)| members.as_slice())
    }
}

/// Spans of consecutive samples at which every sampled node saw the same members.
fn agreed(run: &Run) -> Vec<(Duration, Duration, Vec<String>)> {
    let samples = &run.history.samples;
    let mut spans: Vec<(Duration, Duration, Vec<String>)> = vec![];
    let mut i = 0;
    let mut last: Option<Duration> = None;
    while i < samples.len() {
        let at = samples[i].at;
        let n = samples[i..].iter().take_while(|s| s.at == at).count();
        let same = &samples[i..i + n];
        i += n;
        let members = &same[0].members;
        let agree = same.iter().all(|s| s.members == *members);
        match spans.last_mut() {
            Some((_, to, m))
                if agree && last.is_some_and(|l| *to == l + SAMPLE_EVERY) && m == members =>
            {
                *to = at + SAMPLE_EVERY;
            }
            _ if agree => spans.push((at, at + SAMPLE_EVERY, members.clone())),
            _ => {}
        }
        last = Some(at);
    }
    spans
}
