//! GetMany calls on one long-lived bidirectional stream per peer (the GetStream RPC).
//!
//! A unary call opens an HTTP/2 stream of its own: request headers, then its body in a
//! second write (the peer is woken twice), response headers and trailers, a task on
//! each side. On a stream that is already open a call is one message each way, a
//! DATA frame in one write. Calls are numbered; the peer answers each as it ends, and
//! a reader task hands every reply to its caller.
//!
//! ```text
//!  call(id 7) ─► tx ─► GetStream ══► peer: answers calls concurrently
//!  call(id 8) ─► tx ─┘                  │
//!     ▲                                 ▼
//!   pending[7] ◄── reader task ◄══ reply(id 8), reply(id 7)
//! ```
//!
//! The stream opens on first use and again after it ends. A caller whose stream the
//! peer ended before its reply (a stopping peer ends its streams), or that could not
//! be opened, asks with a unary call instead (gets are reads: asking twice is
//! harmless); a peer that answers Unimplemented (an older member) is asked with unary
//! calls for [`LACKING_RETRY`] before trying again. A stream that breaks (its
//! connection failed, or the keep-alive found the peer silent) fails the calls on it
//! with the transport's error, as it fails the unary calls on that connection: they
//! then have the time left to ask another member.
//! A caller that gives up a call it wrote (its deadline passed, or its own caller went
//! away) sends a cancel for it, and the peer drops the call unanswered.
//! Dropping the client ends its outgoing side, and the peer then ends the stream.

use std::collections::BTreeMap;
use std::mem;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tonic::transport::Channel;

use crate::error::Error;
use crate::peer::{CallObserver, PeerFailure};
use crate::proto::{self, peer_client::PeerClient as Rpc};
use crate::time::{self, Instant};

/// Calls that may wait to be written to one stream; a caller that finds it full waits
/// (within its deadline).
const QUEUE: usize = 256;
/// How long a peer that answered Unimplemented is asked with unary calls only.
pub(super) const LACKING_RETRY: Duration = Duration::from_secs(60);
/// How long a peer that refused a stream otherwise (a status of its own, not the
/// transport's) is asked with unary calls only.
const REFUSED_RETRY: Duration = Duration::from_secs(5);

/// A call's answer: the response, or why there is none (the peer's answer to the
/// whole call, as a GetMany's status would carry, or the transport's error).
pub(super) type Reply = Result<proto::GetManyResponse, PeerFailure>;

/// The GetStream of one peer: opened on first use, again after it ends. Dropped (the
/// member left), it ends its side of the stream and stops its reader.
pub(super) struct Streams {
    current: tokio::sync::Mutex<Option<Open>>,
    next_id: AtomicU64,
    /// Until when the peer is taken to lack GetStream.
    lacking_until: Mutex<Option<Instant>>,
    observer: Arc<dyn CallObserver>,
}

/// An open stream: where calls go in, and who waits for which reply.
#[derive(Clone)]
struct Open {
    tx: mpsc::Sender<proto::GetManyCall>,
    pending: Arc<Mutex<Pending>>,
    reader: AbortHandle,
}

impl Drop for Streams {
    fn drop(&mut self) {
        if let Some(open) = self.current.get_mut() {
            open.reader.abort();
        }
    }
}

#[derive(Default)]
struct Pending {
    /// Callers waiting, by call id (ordered: the simulator replays runs).
    waiting: BTreeMap<u64, oneshot::Sender<Reply>>,
    /// The stream ended: no reply comes any more.
    closed: bool,
}

/// A caller's place in `pending`, given up if it stops waiting (its deadline passed,
/// or it was cancelled). A call given up after it was written is cancelled at the
/// peer too, as a unary call would be.
struct Waiting<'a> {
    pending: &'a Mutex<Pending>,
    id: u64,
    /// Where the call was written, once it was.
    sent: Option<&'a mpsc::Sender<proto::GetManyCall>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let gave_up = self.pending.lock().waiting.remove(&self.id).is_some();
        if let (true, Some(tx)) = (gave_up, self.sent) {
            // At most a queue's worth of messages behind: when the queue is full, the
            // call runs out its own deadline at the peer instead.
            let _ = tx.try_send(proto::GetManyCall {
                id: self.id,
                request: None,
                cancel: true,
            });
        }
    }
}

impl Streams {
    /// Streams that tell `observer` when one opens.
    pub fn new(observer: Arc<dyn CallObserver>) -> Self {
        Streams {
            current: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(0),
            lacking_until: Mutex::new(None),
            observer,
        }
    }

    /// `req` on the stream to `rpc`'s peer, answered within `deadline`; `None`: ask
    /// with a unary call (no stream, or the peer ended it before the reply).
    pub async fn call(
        &self,
        rpc: &Rpc<Channel>,
        req: proto::GetManyRequest,
        deadline: Duration,
    ) -> Option<Reply> {
        let started = time::now();
        let late = || {
            let failure = PeerFailure::Unreachable(format!("no answer within {deadline:?}"));
            Some(Err(failure))
        };
        let open = match time::within(deadline, self.open(rpc)).await {
            Ok(Some(open)) => open,
            Ok(None) => return None,
            Err(_) => return late(),
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = open.pending.lock();
            if pending.closed {
                return None;
            }
            pending.waiting.insert(id, tx);
        }
        let mut waiting = Waiting {
            pending: &open.pending,
            id,
            sent: None,
        };
        let call = proto::GetManyCall {
            id,
            request: Some(req),
            cancel: false,
        };
        let left = deadline.saturating_sub(started.elapsed());
        let answer = time::within(left, async {
            // A caller waiting for room in a full queue still hears that the stream
            // ended. The reader dropped the sender: the peer ended it before the reply.
            let mut rx = rx;
            tokio::select! {
                biased;
                reply = &mut rx => return reply.ok(),
                sent = open.tx.send(call) => sent.ok()?,
            }
            waiting.sent = Some(&open.tx);
            rx.await.ok()
        });
        answer.await.unwrap_or_else(|_| late())
    }

    /// The open stream, opened now if there is none; `None` when the peer lacks
    /// GetStream or the stream could not be opened.
    async fn open(&self, rpc: &Rpc<Channel>) -> Option<Open> {
        let mut current = self.current.lock().await;
        if let Some(open) = current.as_ref()
            && !open.pending.lock().closed
        {
            return Some(open.clone());
        }
        *current = None;
        if (*self.lacking_until.lock()).is_some_and(|until| time::now() < until) {
            return None;
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let calls = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|call| (call, rx))
        });
        // Returns once the peer's response headers are in: one round trip, once.
        let replies = match rpc.clone().get_stream(calls).await {
            Ok(replies) => replies.into_inner(),
            Err(status) => {
                let retry = match status.code() {
                    tonic::Code::Unimplemented => Some(LACKING_RETRY),
                    // The transport's: a new connection may do.
                    tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
                    | tonic::Code::DeadlineExceeded => None,
                    _ => Some(REFUSED_RETRY),
                };
                if let Some(retry) = retry {
                    *self.lacking_until.lock() = Some(time::now() + retry);
                }
                tracing::debug!(%status, "no GetStream; asking with unary calls");
                return None;
            }
        };
        self.observer.observe_stream_opened();
        let pending = Arc::<Mutex<Pending>>::default();
        let reader = tokio::spawn(read(replies, pending.clone())).abort_handle();
        let open = Open {
            tx,
            pending,
            reader,
        };
        *current = Some(open.clone());
        Some(open)
    }
}

/// The reader of one stream: hands every reply to its caller until the stream ends.
/// Then the callers still waiting ask again with unary calls if the peer ended it,
/// and fail with its error if it broke.
async fn read(mut replies: tonic::Streaming<proto::GetManyReply>, pending: Arc<Mutex<Pending>>) {
    let broke = loop {
        match replies.next().await {
            Some(Ok(reply)) => {
                let waiter = pending.lock().waiting.remove(&reply.id);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(reply_from_wire(reply.result));
                }
            }
            Some(Err(status)) => break Some(PeerFailure::from(status)),
            None => break None,
        }
    };
    let waiting = {
        let mut pending = pending.lock();
        pending.closed = true;
        mem::take(&mut pending.waiting)
    };
    if let Some(failure) = broke {
        tracing::debug!(?failure, "a GetStream broke");
        for waiter in waiting.into_values() {
            let _ = waiter.send(Err(failure.clone()));
        }
    }
}

/// A reply's result as its caller takes it.
fn reply_from_wire(result: Option<proto::get_many_reply::Result>) -> Reply {
    let answered = match result {
        Some(proto::get_many_reply::Result::Response(r)) => return Ok(r),
        Some(proto::get_many_reply::Result::Error(e)) => {
            crate::status::from_parts(&e.kind, e.message)
        }
        None => Error::load("the peer sent a reply without a result"),
    };
    Err(PeerFailure::Answered(answered))
}

/// A call's result as a reply carries it.
pub(super) fn reply_to_wire(
    id: u64,
    result: Result<proto::GetManyResponse, Error>,
) -> proto::GetManyReply {
    let result = match result {
        Ok(r) => proto::get_many_reply::Result::Response(r),
        Err(e) => {
            let (kind, message) = crate::status::parts(&e);
            proto::get_many_reply::Result::Error(proto::KeyError { kind, message })
        }
    };
    proto::GetManyReply {
        id,
        result: Some(result),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_carry_the_call_and_its_error() {
        let ok = proto::GetManyResponse { entries: vec![] };
        let reply = reply_to_wire(7, Ok(ok.clone()));
        assert_eq!(reply.id, 7);
        assert_eq!(reply_from_wire(reply.result).unwrap(), ok);
        let failed = reply_to_wire(8, Err(Error::UnknownGroup("nope".into())));
        assert!(matches!(
            reply_from_wire(failed.result),
            Err(PeerFailure::Answered(Error::UnknownGroup(g))) if g == "nope"
        ));
        assert!(matches!(
            reply_from_wire(None),
            Err(PeerFailure::Answered(Error::Load(_)))
        ));
    }
}
