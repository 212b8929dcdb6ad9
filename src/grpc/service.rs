//! The gRPC service peers call: decode, call the group, encode.

use tonic::{Request, Response, Status};

use super::convert::{
    accept_from_wire, check_codec, deadline_from_wire, get_response, many_to_wire, peek_response,
    pushed_from_wire, ttl_from_wire,
};
use crate::group::Registry;
use crate::proto::{self, peer_server::Peer};

/// Most keys a GetMany may ask for: each is a get of its own while it runs.
pub const MAX_MANY_KEYS: usize = 1024;

/// The peer service of one node, over its registry of groups.
#[derive(Clone)]
pub struct PeerService {
    groups: Registry,
    /// Room for values in a GetMany's answer: the message limit less the envelope.
    many_budget: usize,
}

impl PeerService {
    /// Serves the groups of `groups`.
    pub fn new(groups: Registry) -> Self {
        let many_budget = super::message_limit(&groups).saturating_sub(super::ENVELOPE);
        PeerService {
            groups,
            many_budget,
        }
    }

    /// The groups it serves.
    pub fn groups(&self) -> &Registry {
        &self.groups
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
        Ok(Response::new(get_response(answer)))
    }

    async fn get_many(
        &self,
        req: Request<proto::GetManyRequest>,
    ) -> Result<Response<proto::GetManyResponse>, Status> {
        let req = req.into_inner();
        if req.keys.len() > MAX_MANY_KEYS {
            return Err(Status::invalid_argument(format!(
                "{} keys in one GetMany; at most {MAX_MANY_KEYS}",
                req.keys.len()
            )));
        }
        let group = self.groups.get(&req.group)?;
        let deadline = deadline_from_wire(req.deadline_ms);
        let accept = accept_from_wire(&req.accept);
        let gets = (req.keys.iter()).map(|key| group.serve_peer(key, deadline, false, &accept));
        let results = futures::future::join_all(gets).await;
        Ok(Response::new(many_to_wire(results, self.many_budget)))
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
