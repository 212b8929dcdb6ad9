//! The gRPC service peers call: decode, call the group, encode.

use std::collections::BTreeMap;
use std::task::Poll;

use futures::future::{AbortHandle, Abortable};
use futures::stream::{BoxStream, FuturesUnordered};
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{
    accept_from_wire, asker_room, check_codec, deadline_from_wire, get_response, many_to_wire,
    past_asker_room, peek_response, pushed_from_wire, ttl_from_wire,
};
use super::stream::reply_to_wire;
use crate::error::Error;
use crate::group::Registry;
use crate::proto::{self, peer_server::Peer};

/// Most keys a GetMany may ask for: each is a get of its own while it runs.
pub const MAX_MANY_KEYS: usize = 1024;
/// Most calls of one GetStream answered at once (as many as the HTTP/2 streams of a
/// connection hyper serves at once by default, each a unary call); the stream's next
/// calls are read when one ends (the asker's writes then wait on flow control).
pub const MAX_STREAM_CALLS: usize = 200;

/// The peer service of one node, over its registry of groups.
#[derive(Clone)]
pub struct PeerService {
    groups: Registry,
    /// Room for values in a GetMany's answer: the message limit less the envelope.
    many_budget: usize,
    /// Turns true when the node stops: its GetStreams then end.
    stop: Option<watch::Receiver<bool>>,
}

impl PeerService {
    /// Serves the groups of `groups`.
    pub fn new(groups: Registry) -> Self {
        let many_budget = super::message_limit(&groups).saturating_sub(super::ENVELOPE);
        PeerService {
            groups,
            many_budget,
            stop: None,
        }
    }

    /// Ends its GetStreams when `stop` turns true (the node stopping): the calls
    /// running are answered, no more are read, and the stream ends, so a draining
    /// server need not wait out its grace period for them. An asker's calls not yet
    /// read are asked again with unary calls, which the stopping server refuses.
    #[must_use]
    pub fn ending_streams_on(mut self, stop: watch::Receiver<bool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// The groups it serves.
    pub fn groups(&self) -> &Registry {
        &self.groups
    }

    /// A GetMany's answer: each key as its own get would be answered.
    async fn many(&self, req: proto::GetManyRequest) -> Result<proto::GetManyResponse, Error> {
        if req.keys.len() > MAX_MANY_KEYS {
            return Err(Error::Invalid(format!(
                "{} keys in one GetMany; at most {MAX_MANY_KEYS}",
                req.keys.len()
            )));
        }
        let group = self.groups.get(&req.group)?;
        let deadline = deadline_from_wire(req.deadline_ms);
        let accept = accept_from_wire(&req.accept);
        let gets = (req.keys.iter()).map(|key| group.serve_peer(key, deadline, false, &accept));
        let results = futures::future::join_all(gets).await;
        let room = asker_room(req.max_reply_bytes);
        Ok(many_to_wire(results, self.many_budget.min(room), room))
    }

    /// The replies to a GetStream's `calls`: up to [`MAX_STREAM_CALLS`] answered at
    /// once, each reply sent as its call ends; a call the asker cancels is dropped,
    /// unanswered. The stream ends when the asker ends its side (or the node stops)
    /// and every call read is answered, or at the first message that cannot be read
    /// (too large, malformed), with that status.
    fn replies(
        &self,
        mut calls: Streaming<proto::GetManyCall>,
    ) -> BoxStream<'static, Result<proto::GetManyReply, Status>> {
        let service = self.clone();
        let mut running = FuturesUnordered::new();
        // The running calls' ids (ordered: the simulator replays runs), to cancel.
        let mut cancels: BTreeMap<u64, AbortHandle> = BTreeMap::new();
        let mut ended = false;
        let mut stopping = self.stop.clone().map(|mut stop| {
            async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            }
            .boxed()
            .fuse()
        });
        let replies = futures::stream::poll_fn(move |cx| {
            if !ended
                && let Some(stopping) = stopping.as_mut()
                && stopping.poll_unpin(cx).is_ready()
            {
                ended = true;
            }
            // Again after a cancelled call ends: it freed a place for the next one.
            loop {
                while !ended && running.len() < MAX_STREAM_CALLS {
                    match calls.poll_next_unpin(cx) {
                        Poll::Ready(Some(Ok(call))) if call.cancel && call.request.is_none() => {
                            if let Some(running) = cancels.remove(&call.id) {
                                running.abort();
                            }
                        }
                        Poll::Ready(Some(Ok(call))) => {
                            let (id, service) = (call.id, service.clone());
                            let (cancel, registration) = AbortHandle::new_pair();
                            cancels.insert(id, cancel);
                            let answer = Abortable::new(service.answer(call), registration);
                            running.push(answer.map(move |reply| (id, reply.ok())).boxed());
                        }
                        Poll::Ready(Some(Err(status))) => return Poll::Ready(Some(Err(status))),
                        Poll::Ready(None) => ended = true,
                        Poll::Pending => break,
                    }
                }
                return match running.poll_next_unpin(cx) {
                    Poll::Ready(Some((id, reply))) => {
                        cancels.remove(&id);
                        match reply {
                            Some(reply) => Poll::Ready(Some(Ok(reply))),
                            // Cancelled: no reply.
                            None => continue,
                        }
                    }
                    // Nothing running: the end, or (the calls' waker is set) more to come.
                    Poll::Ready(None) if ended => Poll::Ready(None),
                    Poll::Ready(None) | Poll::Pending => Poll::Pending,
                };
            }
        });
        // After an unreadable message, nothing more.
        replies
            .scan(false, |failed, reply| {
                let next = (!*failed).then_some(reply);
                if matches!(next, Some(Err(_))) {
                    *failed = true;
                }
                futures::future::ready(next)
            })
            .boxed()
    }

    /// One GetStream call's reply.
    async fn answer(self, call: proto::GetManyCall) -> proto::GetManyReply {
        let result = match call.request {
            Some(req) => self.many(req).await,
            None => Err(Error::Invalid("a GetManyCall without its request".into())),
        };
        reply_to_wire(call.id, result)
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn get(
        &self,
        req: Request<proto::GetRequest>,
    ) -> Result<Response<proto::GetResponse>, Status> {
        let req = req.into_inner();
        let group = self.groups.get(&req.group)?;
        let deadline = deadline_from_wire(req.deadline_ms);
        let accept = accept_from_wire(&req.accept);
        let answer = (group.serve_peer(&req.key, deadline, req.relay, &accept)).await?;
        let (len, room) = (answer.0.value.len(), asker_room(req.max_reply_bytes));
        if len > room {
            return Err(past_asker_room(len, room).into());
        }
        Ok(Response::new(get_response(answer)))
    }

    async fn get_many(
        &self,
        req: Request<proto::GetManyRequest>,
    ) -> Result<Response<proto::GetManyResponse>, Status> {
        Ok(Response::new(self.many(req.into_inner()).await?))
    }

    type GetStreamStream = BoxStream<'static, Result<proto::GetManyReply, Status>>;

    async fn get_stream(
        &self,
        req: Request<Streaming<proto::GetManyCall>>,
    ) -> Result<Response<Self::GetStreamStream>, Status> {
        Ok(Response::new(self.replies(req.into_inner())))
    }

    async fn set(
        &self,
        req: Request<proto::SetRequest>,
    ) -> Result<Response<proto::SetResponse>, Status> {
        let req = req.into_inner();
        check_codec(req.codec)?;
        let group = self.groups.get(&req.group)?;
        let (ttl, deadline) = (
            ttl_from_wire(req.ttl_ms),
            deadline_from_wire(req.deadline_ms),
        );
        let version = group
            .write_for_peer(&req.key, Some(req.value), ttl, deadline)
            .await?;
        Ok(Response::new(proto::SetResponse { version }))
    }

    async fn remove(
        &self,
        req: Request<proto::RemoveRequest>,
    ) -> Result<Response<proto::RemoveResponse>, Status> {
        let req = req.into_inner();
        let group = self.groups.get(&req.group)?;
        let deadline = deadline_from_wire(req.deadline_ms);
        let version = group.write_for_peer(&req.key, None, None, deadline).await?;
        Ok(Response::new(proto::RemoveResponse { version }))
    }

    async fn invalidate(
        &self,
        req: Request<proto::InvalidateRequest>,
    ) -> Result<Response<proto::InvalidateResponse>, Status> {
        let req = req.into_inner();
        self.groups
            .get(&req.group)?
            .invalidate(&req.key, req.version)?;
        Ok(Response::new(proto::InvalidateResponse {}))
    }

    async fn peek(
        &self,
        req: Request<proto::PeekRequest>,
    ) -> Result<Response<proto::PeekResponse>, Status> {
        let req = req.into_inner();
        let accept = accept_from_wire(&req.accept);
        let group = self.groups.get(&req.group)?;
        let held = group.peek_for_peer_as(&req.key, &req.asker, &accept)?;
        Ok(Response::new(peek_response(held)))
    }

    async fn push(
        &self,
        req: Request<proto::PushRequest>,
    ) -> Result<Response<proto::PushResponse>, Status> {
        let req = req.into_inner();
        let group = self.groups.get(&req.group)?;
        let entries = (req.entries.into_iter())
            .map(pushed_from_wire)
            .collect::<Result<Vec<_>, Status>>()?;
        let accepted = group.accept_pushed(entries)?;
        let accepted = u32::try_from(accepted).unwrap_or(u32::MAX);
        Ok(Response::new(proto::PushResponse { accepted }))
    }
}
