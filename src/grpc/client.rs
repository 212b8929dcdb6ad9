//! The gRPC implementation of [`PeerClient`]: a lazily connected tonic channel, every call
//! bounded by the caller's deadline and reported to a [`CallObserver`]. A call the
//! channel never sent, because the peer had closed its connection (a restart), is sent
//! again on a new one. Gets are coalesced into GetMany calls when several are ready
//! at once (batch.rs).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tonic::transport::Channel;

use super::batch::{Answer, Batcher, Coalescing, Duty, Waiter};
use super::convert::{
    accepted, deadline_to_wire, fetched_from_wire, many_from_wire, peeked_from_wire, ttl_to_wire,
};
use super::stream::Streams;
use crate::peer::{CallObserver, Fetched, MIN_EVIDENCE, Outcome, PeerClient, PeerFailure};
use crate::proto::{self, peer_client::PeerClient as Rpc};
use crate::time;

/// A client of one peer. Cheap to clone; clones share the channel, which connects on
/// first use and reconnects after a failure.
#[derive(Clone)]
pub struct GrpcPeer {
    id: Arc<str>,
    rpc: Rpc<Channel>,
    observer: Arc<dyn CallObserver>,
    batch: Arc<Batcher>,
    /// The GetStream gets go on, if they go on one.
    streams: Option<Arc<Streams>>,
    /// Longest value an answer may decode to (the message limit).
    limit: usize,
}

impl GrpcPeer {
    /// A client of peer `id` over `channel` that sends and accepts messages up to
    /// `limit` bytes, telling `observer` of every call.
    pub fn new(
        id: impl Into<Arc<str>>,
        channel: Channel,
        limit: usize,
        observer: Arc<dyn CallObserver>,
    ) -> Self {
        let streams =
            (Coalescing::default().stream).then(|| Arc::new(Streams::new(observer.clone())));
        GrpcPeer {
            id: id.into(),
            rpc: Rpc::new(channel)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            observer,
            batch: Arc::new(Batcher::new(Coalescing::default())),
            streams,
            limit,
        }
    }

    /// Coalesces gets as `how` says (batch.rs).
    #[must_use]
    pub fn with_coalescing(mut self, how: Coalescing) -> Self {
        self.batch = Arc::new(Batcher::new(how));
        self.streams = how
            .stream
            .then(|| Arc::new(Streams::new(self.observer.clone())));
        self
    }

    /// One call with `deadline` as its gRPC timeout, timed for the observer. `req`
    /// makes the request for the time left, so a call sent again carries what remains.
    async fn call<Req, Resp, F, Fut>(
        &self,
        name: &'static str,
        deadline: Duration,
        f: F,
        req: impl Fn(Duration) -> Req,
    ) -> Result<Resp, PeerFailure>
    where
        F: Fn(Rpc<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        if deadline.is_zero() {
            return Err(PeerFailure::Answered(crate::error::Error::Timeout));
        }
        let started = time::now();
        let send = |left: Duration| {
            let mut req = tonic::Request::new(req(left));
            req.set_timeout(left);
            f(self.rpc.clone(), req)
        };
        let answer = async {
            match send(deadline).await {
                // The channel takes a closed connection for open until its connection
                // task next runs; a call given to it in that window is dropped unsent.
                // By the time it fails the channel knows, and dials anew.
                Err(status) if never_sent(&status) => {
                    let left = deadline.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        return Err(status);
                    }
                    tracing::debug!(peer = %self.id, "connection closed under an unsent call; sending it again");
                    send(left).await
                }
                answer => answer,
            }
        };
        // The grpc-timeout bounds the call once it is on a connection; a call queued
        // behind a connection attempt to a silent peer would wait for that attempt, so
        // our own timer bounds the whole of it.
        let result = match time::within(deadline, answer).await {
            Ok(answer) => answer
                .map(tonic::Response::into_inner)
                .map_err(PeerFailure::from),
            Err(_) => Err(PeerFailure::Unreachable(format!(
                "no answer within {deadline:?}"
            ))),
        };
        self.observer
            .observe(name, Outcome::of(&result), started.elapsed());
        result
    }
}

impl GrpcPeer {
    async fn get_as(
        &self,
        group: &str,
        key: &str,
        deadline: Duration,
        relay: bool,
    ) -> Result<Fetched, PeerFailure> {
        let req = |left| proto::GetRequest {
            group: group.to_owned(),
            key: key.to_owned(),
            deadline_ms: deadline_to_wire(left),
            relay,
            accept: accepted(),
            max_reply_bytes: self.limit as u64,
        };
        let get = |mut rpc: Rpc<Channel>, req| async move { rpc.get(req).await };
        let answer = self.call("get", deadline, get, req).await?;
        let compressed = answer.codec != proto::Codec::Identity as i32;
        self.decode(compressed, || fetched_from_wire(answer, self.limit))
    }

    /// `read()`, an answer's conversion that decodes its values, timed for the
    /// observer when any came `compressed` (refused frames too: a bomb cut off at the
    /// limit is the costliest).
    fn decode<T>(&self, compressed: bool, read: impl FnOnce() -> T) -> T {
        if !compressed {
            return read();
        }
        let started = time::now();
        let read = read();
        self.observer.observe_decode(started.elapsed());
        read
    }

    /// A get through the group's queue (batch.rs): led, or answered by its leader.
    async fn get_coalesced(
        &self,
        group: &str,
        key: &str,
        deadline: Duration,
    ) -> Result<Fetched, PeerFailure> {
        let started = time::now();
        let joined = self.batch.join(group, key, started + deadline);
        if joined.leads {
            let mut duty = Duty {
                batcher: &self.batch,
                group,
                armed: true,
            };
            // Gets ready to run now join the queue meanwhile, and more while the most
            // calls are out.
            tokio::task::yield_now().await;
            self.batch.room().await;
            duty.armed = false;
            let calls = self.batch.split(self.batch.take(group));
            futures::future::join_all(calls.into_iter().map(|call| self.send(group, call))).await;
        }
        let left = deadline.saturating_sub(started.elapsed());
        match time::within(left, joined.rx).await {
            Ok(Ok(Some(answer))) => answer,
            // Not in the batch's answer, or its leader gave up: ask alone.
            Ok(Ok(None) | Err(_)) => {
                let left = deadline.saturating_sub(started.elapsed());
                self.alone(group, key, left).await
            }
            Err(_) => Err(PeerFailure::Unreachable(format!(
                "no answer within {deadline:?}"
            ))),
        }
    }

    /// After a call given `deadline` found the peer unreachable (with time enough that
    /// it says something of the peer, as for a suspicion), the gets still queued for
    /// it get the same answer at once: sent after it, they would wait out their own
    /// deadlines on the same dead connection and leave no time to ask another member.
    fn unreachable<T>(&self, answer: &Result<T, PeerFailure>, deadline: Duration) {
        if let Err(failure @ PeerFailure::Unreachable(_)) = answer
            && deadline >= MIN_EVIDENCE
        {
            self.batch.fail_all(failure);
        }
    }

    /// Sends the gets of `waiting` (one call's worth); each waiter receives its answer.
    async fn send(&self, group: &str, waiting: Vec<Waiter>) {
        let _out = self.batch.call();
        let now = time::now();
        let deadline = (waiting.iter())
            .map(|w| w.deadline.saturating_duration_since(now))
            .max()
            .unwrap_or_default();
        let keys: Vec<String> = waiting.iter().map(|w| w.key.clone()).collect();
        let answers = self.ask(group, keys, deadline).await;
        for (w, answer) in waiting.into_iter().zip(answers) {
            let _ = w.tx.send(answer);
        }
    }

    /// A get of `key` in a call of its own.
    async fn alone(
        &self,
        group: &str,
        key: &str,
        deadline: Duration,
    ) -> Result<Fetched, PeerFailure> {
        let started = time::now();
        if self.streams.is_some()
            && let Some(Some(answer)) = self.ask(group, vec![key.to_owned()], deadline).await.pop()
        {
            return answer;
        }
        // Only a peer that answers no entry for the one key it was asked gets here.
        let left = deadline.saturating_sub(started.elapsed());
        self.get_as(group, key, left, false).await
    }

    /// The answers to gets of `keys` (`None`: ask alone), asked in one call: on the
    /// peer's GetStream when it has one (stream.rs), else a Get for one key and a
    /// GetMany for more. Reported as a "get" or a "get_many" either way.
    async fn ask(&self, group: &str, keys: Vec<String>, deadline: Duration) -> Vec<Answer> {
        let started = time::now();
        let n = keys.len();
        if deadline.is_zero() {
            // No time left (it went waiting for a call slot): as a unary call answers,
            // and nothing is sent (a zero deadline on the wire means none).
            let late = Err(PeerFailure::Answered(crate::error::Error::Timeout));
            return vec![Some(late); n];
        }
        if n > 1 {
            self.observer.observe_batch(n);
        }
        let request = |keys, left| proto::GetManyRequest {
            group: group.to_owned(),
            keys,
            deadline_ms: deadline_to_wire(left),
            accept: accepted(),
            max_reply_bytes: self.limit as u64,
        };
        if let Some(streams) = &self.streams {
            let name = if n == 1 { "get" } else { "get_many" };
            let reply = streams.call(&self.rpc, request(keys.clone(), deadline), deadline);
            // None: no stream, or the peer ended it before the reply: a unary call below.
            if let Some(answer) = reply.await {
                self.observer
                    .observe(name, Outcome::of(&answer), started.elapsed());
                return self.answers(answer, n, deadline);
            }
        }
        let deadline = deadline.saturating_sub(started.elapsed());
        if n == 1 {
            let answer = self.get_as(group, &keys[0], deadline, false).await;
            self.unreachable(&answer, deadline);
            return vec![Some(answer)];
        }
        let get_many = |mut rpc: Rpc<Channel>, req| async move { rpc.get_many(req).await };
        let req = |left| request(keys.clone(), left);
        let answer = self.call("get_many", deadline, get_many, req).await;
        self.answers(answer, n, deadline)
    }

    /// Each of `n` keys' answer in a GetMany's `answer`, given `deadline`.
    fn answers(
        &self,
        answer: Result<proto::GetManyResponse, PeerFailure>,
        n: usize,
        deadline: Duration,
    ) -> Vec<Answer> {
        match answer {
            Ok(answer) => {
                let compressed = (answer.entries.iter()).any(|e| {
                    matches!(&e.result, Some(proto::get_many_entry::Result::Found(found))
                        if found.codec != proto::Codec::Identity as i32)
                });
                self.decode(compressed, || many_from_wire(answer, n, self.limit))
            }
            Err(failure) => {
                let failed = Err(failure);
                self.unreachable(&failed, deadline);
                vec![Some(failed); n]
            }
        }
    }
}

#[async_trait]
impl PeerClient for GrpcPeer {
    fn id(&self) -> &str {
        &self.id
    }

    async fn get(
        &self,
        group: &str,
        key: &str,
        deadline: Duration,
    ) -> Result<Fetched, PeerFailure> {
        if deadline.is_zero() {
            return self.get_as(group, key, deadline, false).await;
        }
        if !self.batch.enabled() {
            return self.alone(group, key, deadline).await;
        }
        self.get_coalesced(group, key, deadline).await
    }

    async fn get_relayed(
        &self,
        group: &str,
        key: &str,
        deadline: Duration,
    ) -> Result<Fetched, PeerFailure> {
        self.get_as(group, key, deadline, true).await
    }

    async fn set(
        &self,
        group: &str,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
        deadline: Duration,
    ) -> Result<u64, PeerFailure> {
        let req = |left| proto::SetRequest {
            group: group.to_owned(),
            key: key.to_owned(),
            value: value.clone(),
            ttl_ms: ttl_to_wire(ttl),
            codec: proto::Codec::Identity as i32,
            deadline_ms: deadline_to_wire(left),
        };
        let set = |mut rpc: Rpc<Channel>, req| async move { rpc.set(req).await };
        Ok(self.call("set", deadline, set, req).await?.version)
    }

    async fn remove(&self, group: &str, key: &str, deadline: Duration) -> Result<u64, PeerFailure> {
        let req = |left| proto::RemoveRequest {
            group: group.to_owned(),
            key: key.to_owned(),
            deadline_ms: deadline_to_wire(left),
        };
        let remove = |mut rpc: Rpc<Channel>, req| async move { rpc.remove(req).await };
        Ok(self.call("remove", deadline, remove, req).await?.version)
    }

    async fn invalidate(
        &self,
        group: &str,
        key: &str,
        version: u64,
        deadline: Duration,
    ) -> Result<(), PeerFailure> {
        let req = |_| proto::InvalidateRequest {
            group: group.to_owned(),
            key: key.to_owned(),
            version,
        };
        let invalidate = |mut rpc: Rpc<Channel>, req| async move { rpc.invalidate(req).await };
        self.call("invalidate", deadline, invalidate, req)
            .await
            .map(drop)
    }

    async fn peek(
        &self,
        group: &str,
        key: &str,
        asker: &str,
        deadline: Duration,
    ) -> Result<Option<Fetched>, PeerFailure> {
        let req = |left| proto::PeekRequest {
            group: group.to_owned(),
            key: key.to_owned(),
            deadline_ms: deadline_to_wire(left),
            asker: asker.to_owned(),
            accept: accepted(),
        };
        let peek = |mut rpc: Rpc<Channel>, req| async move { rpc.peek(req).await };
        let answer = self.call("peek", deadline, peek, req).await?;
        let compressed = answer.codec != proto::Codec::Identity as i32;
        self.decode(compressed, || peeked_from_wire(answer, self.limit))
    }

    async fn push(
        &self,
        group: &str,
        entries: Vec<(String, Fetched)>,
        deadline: Duration,
    ) -> Result<usize, PeerFailure> {
        let entries: Vec<proto::PushEntry> = entries.into_iter().map(Into::into).collect();
        let req = |left| proto::PushRequest {
            group: group.to_owned(),
            entries: entries.clone(),
            deadline_ms: deadline_to_wire(left),
        };
        let push = |mut rpc: Rpc<Channel>, req| async move { rpc.push(req).await };
        let answer = self.call("push", deadline, push, req).await?;
        Ok(answer.accepted as usize)
    }
}

/// Whether the channel dropped the call before writing it to any connection (hyper's
/// "canceled"), so sending it again cannot apply it twice. gRPC clients retry these
/// transparently too.
fn never_sent(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        source = e.source();
    }
    false
}

impl std::fmt::Debug for GrpcPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcPeer")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::net::transport::{self, ChannelTimeouts};
    use crate::net::{Net, TokioNet};
    use crate::peer::Unobserved;

    /// A network on which every connection attempt hangs (a peer whose SYNs vanish).
    #[derive(Clone)]
    struct Silent;

    impl Net for Silent {
        type Stream = tokio::net::TcpStream;
        type Listener = tokio::net::TcpListener;

        async fn bind(&self, addr: &str) -> io::Result<Self::Listener> {
            TokioNet.bind(addr).await
        }

        async fn connect(&self, _: &str) -> io::Result<Self::Stream> {
            std::future::pending().await
        }
    }

    /// A client of a peer whose connection attempts hang, giving up after 10 s.
    fn silent_peer() -> GrpcPeer {
        let timeouts = ChannelTimeouts {
            connect: Duration::from_secs(10),
            keep_alive: Duration::from_secs(2),
        };
        let channel = transport::channel(Silent, "silent", "silent:7000", timeouts, None).unwrap();
        GrpcPeer::new("silent", channel, 1 << 20, Arc::new(Unobserved))
    }

    /// A get waiting for a call slot behind a call that finds the peer unreachable is
    /// answered with that at once, not after its own deadline: it has time left to ask
    /// another member. (Before: it was sent after the failed call and waited out its
    /// 2 s deadline.)
    #[tokio::test(start_paused = true)]
    async fn gets_queued_behind_an_unreachable_call_fail_with_it() {
        let peer = silent_peer().with_coalescing(Coalescing {
            keys: 64,
            calls: 1,
            stream: true,
        });
        let started = time::now();
        let first = peer.get("g", "a", Duration::from_millis(300));
        let queued = async {
            // Joins after the first call is out, so it waits for the call slot.
            tokio::time::sleep(Duration::from_millis(10)).await;
            let got = peer.get("g", "b", Duration::from_secs(2)).await;
            (got, started.elapsed())
        };
        let (first, (queued, took)) = tokio::join!(first, queued);
        assert!(
            matches!(first, Err(PeerFailure::Unreachable(_))),
            "{first:?}"
        );
        assert!(
            matches!(queued, Err(PeerFailure::Unreachable(_))),
            "{queued:?}"
        );
        assert!(took < Duration::from_millis(400), "{took:?}");
    }

    /// Calls queued behind a connection attempt end at their own deadlines, not when the
    /// attempt gives up (here after 10 s).
    #[tokio::test(start_paused = true)]
    async fn calls_to_a_silent_peer_end_at_their_deadline() {
        let peer = silent_peer();
        let started = time::now();
        let (get, remove) = tokio::join!(
            peer.get("g", "k", Duration::from_millis(300)),
            peer.remove("g", "k", Duration::from_millis(500)),
        );
        assert!(matches!(get, Err(PeerFailure::Unreachable(_))), "{get:?}");
        assert!(
            matches!(remove, Err(PeerFailure::Unreachable(_))),
            "{remove:?}"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_millis(600),
            "{took:?}"
        );
    }
}
