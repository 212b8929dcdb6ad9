//! Coalescing of a node's gets to one peer into GetMany calls.
//!
//! Every get to a peer joins the queue of its group. The first get of an empty queue
//! leads: it yields to the runtime once, so that gets ready to run at the same moment
//! (other requests of the same scheduler round, or the keys of one
//! [`Group::get_many`](crate::group::Group::get_many)) join it, then takes the queue
//! and sends it: a lone get as a plain Get (on an idle link nothing is added but that
//! yield), several as one GetMany per [`Batcher::max_keys`] keys; on the peer's
//! GetStream (stream.rs, the default) each as one call on the stream. The leader hands each
//! waiting get its own answer; a get whose entry did not fit the response, or whose
//! leader was cancelled before answering, asks alone.
//!
//! ```text
//!  get(k1) ─► queue[g] = [k1] ── leads: yield ──┐
//!  get(k2) ─► queue[g] = [k1, k2]               │ take [k1, k2, k3]
//!  get(k3) ─► queue[g] = [k1, k2, k3]           ▼
//!                                     GetMany(g, [k1, k2, k3]) ─► answers to each
//! ```
//!
//! Gets arrive here after the group's singleflight, so a key is in a batch at most
//! once per node, and each key's answer is what a Get of it would have been: the
//! receiver answers every key as [`Group::get_for_peer`](crate::group::Group::get_for_peer).

use std::collections::BTreeMap;
use std::mem;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};

use crate::peer::{Fetched, PeerFailure};
use crate::time::Instant;

/// Most keys in one GetMany by default.
pub const DEFAULT_BATCH_KEYS: usize = 64;
/// Most calls of gets out to one peer at once by default.
pub const DEFAULT_BATCH_CALLS: usize = 2;

/// How a node coalesces its gets to each peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coalescing {
    /// Most keys in one GetMany; 0 or 1: every get is its own call.
    pub keys: usize,
    /// Most calls of gets out to one peer at once; 0: no limit. A get that finds this
    /// many waits for one to end, and goes with the gets that come meanwhile.
    pub calls: usize,
    /// Whether gets go on one long-lived GetStream per peer (stream.rs) rather than a
    /// unary call each; a peer without it is asked with unary calls.
    pub stream: bool,
}

impl Default for Coalescing {
    fn default() -> Self {
        Coalescing {
            keys: DEFAULT_BATCH_KEYS,
            calls: DEFAULT_BATCH_CALLS,
            stream: true,
        }
    }
}
/// Most key bytes in one GetMany: a request stays far below the message limit, which
/// leaves room for one key and one value besides [`super::ENVELOPE`].
const MAX_BATCH_KEY_BYTES: usize = super::ENVELOPE / 2;

/// What a waiting get receives: its answer, or `None` to ask alone.
pub(super) type Answer = Option<Result<Fetched, PeerFailure>>;

/// A get waiting in a queue.
pub(super) struct Waiter {
    pub key: String,
    pub deadline: Instant,
    pub tx: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiter>,
    /// A leader will take this queue.
    led: bool,
}

/// The queues of one peer, one per group (ordered: the simulator replays runs).
pub(super) struct Batcher {
    max_keys: usize,
    /// Most calls of gets out to the peer at once (0: no limit); a leader that finds
    /// this many waits for one to end, while more gets join its queue.
    max_calls: usize,
    calls: AtomicUsize,
    call_ended: Notify,
    queues: Mutex<BTreeMap<String, Queue>>,
}

/// A get's place in its queue.
pub(super) struct Joined {
    pub rx: oneshot::Receiver<Answer>,
    /// Whether this get leads: it must call [`Batcher::take`] (or drop its [`Duty`]).
    pub leads: bool,
}

impl Batcher {
    /// Batches as `how` says.
    pub fn new(how: Coalescing) -> Self {
        Batcher {
            max_keys: how.keys,
            max_calls: how.calls,
            calls: AtomicUsize::new(0),
            call_ended: Notify::new(),
            queues: Mutex::default(),
        }
    }

    /// Waits until fewer than the most calls are out.
    pub async fn room(&self) {
        if self.max_calls == 0 {
            return;
        }
        loop {
            // Registered before the check: an end between the two is not missed.
            let ended = self.call_ended.notified();
            if self.calls.load(Ordering::Acquire) < self.max_calls {
                return;
            }
            ended.await;
        }
    }

    /// Counts a call out until the returned guard drops.
    pub fn call(&self) -> CallOut<'_> {
        self.calls.fetch_add(1, Ordering::AcqRel);
        CallOut(self)
    }

    /// Whether gets are coalesced at all.
    pub fn enabled(&self) -> bool {
        self.max_keys > 1
    }

    /// Queues a get of `key` in `group`, due by `deadline`.
    pub fn join(&self, group: &str, key: &str, deadline: Instant) -> Joined {
        let (tx, rx) = oneshot::channel();
        let mut queues = self.queues.lock();
        let queue = match queues.get_mut(group) {
            Some(queue) => queue,
            None => queues.entry(group.to_owned()).or_default(),
        };
        queue.waiting.push(Waiter {
            key: key.to_owned(),
            deadline,
            tx,
        });
        let leads = !mem::replace(&mut queue.led, true);
        Joined { rx, leads }
    }

    /// The leader's take: every get waiting in `group`'s queue, which is left empty and
    /// unled.
    pub fn take(&self, group: &str) -> Vec<Waiter> {
        let mut queues = self.queues.lock();
        let Some(queue) = queues.get_mut(group) else {
            return Vec::new();
        };
        queue.led = false;
        mem::take(&mut queue.waiting)
    }

    /// Answers every get queued, in every group, with `failure`: the peer was found
    /// unreachable. Leaders keep their duty; they find their queues emptied.
    pub fn fail_all(&self, failure: &PeerFailure) {
        let waiting: Vec<Waiter> = (self.queues.lock().values_mut())
            .flat_map(|queue| mem::take(&mut queue.waiting))
            .collect();
        for w in waiting {
            let _ = w.tx.send(Some(Err(failure.clone())));
        }
    }

    /// `waiting` cut into the calls to send: at most `max_keys` keys and
    /// [`MAX_BATCH_KEY_BYTES`] of keys each (a longer key alone).
    pub fn split(&self, waiting: Vec<Waiter>) -> Vec<Vec<Waiter>> {
        let mut calls: Vec<Vec<Waiter>> = Vec::new();
        let mut bytes = 0;
        for w in waiting {
            let fits = calls.last().is_some_and(|last| {
                last.len() < self.max_keys && bytes + w.key.len() <= MAX_BATCH_KEY_BYTES
            });
            if !fits {
                calls.push(Vec::new());
                bytes = 0;
            }
            bytes += w.key.len();
            calls.last_mut().expect("pushed above").push(w);
        }
        calls
    }
}

/// A call of gets out to the peer; its end lets a waiting leader send.
pub(super) struct CallOut<'a>(&'a Batcher);

impl Drop for CallOut<'_> {
    fn drop(&mut self) {
        self.0.calls.fetch_sub(1, Ordering::AcqRel);
        self.0.call_ended.notify_waiters();
    }
}

/// A leader's duty to take its queue. A leader cancelled before it took the queue
/// (its caller gave up while it yielded) hands the gets waiting there back: each asks
/// alone.
pub(super) struct Duty<'a> {
    pub batcher: &'a Batcher,
    pub group: &'a str,
    pub armed: bool,
}

impl Drop for Duty<'_> {
    fn drop(&mut self) {
        if self.armed {
            for w in self.batcher.take(self.group) {
                let _ = w.tx.send(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time;

    #[test]
    fn the_first_get_of_an_empty_queue_leads_and_takes_all() {
        let b = Batcher::new(Coalescing {
            keys: 2,
            calls: 0,
            stream: false,
        });
        let at = time::now();
        let first = b.join("g", "a", at);
        let second = b.join("g", "b", at);
        let other = b.join("h", "c", at);
        assert!(first.leads && !second.leads && other.leads);
        let taken = b.take("g");
        assert_eq!(
            taken.iter().map(|w| w.key.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(
            b.join("g", "d", at).leads,
            "taken: the next get leads again"
        );
        let calls = b.split(taken.into_iter().chain(b.take("g")).collect());
        let sizes: Vec<usize> = calls.iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 1], "at most max_keys per call");
    }

    #[test]
    fn long_keys_are_split_by_bytes() {
        let b = Batcher::new(Coalescing {
            keys: 64,
            calls: 0,
            stream: false,
        });
        let at = time::now();
        let long = "k".repeat(MAX_BATCH_KEY_BYTES / 2);
        for _ in 0..3 {
            b.join("g", &long, at);
        }
        let sizes: Vec<usize> = b.split(b.take("g")).iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 1]);
    }

    #[test]
    fn a_cancelled_leader_sends_the_waiting_gets_off_alone() {
        let b = Batcher::new(Coalescing {
            keys: 8,
            calls: 0,
            stream: false,
        });
        let at = time::now();
        let lead = b.join("g", "a", at);
        let mut follower = b.join("g", "b", at);
        assert!(lead.leads);
        drop(Duty {
            batcher: &b,
            group: "g",
            armed: true,
        });
        assert!(matches!(follower.rx.try_recv(), Ok(None)), "asks alone");
        assert!(b.join("g", "c", at).leads, "the queue is free again");
    }
}
