//! The gRPC service peers call: decode, call the group, encode.

use tonic::{Request, Response, Status};

use super::convert::{check_codec, deadline_from_wire, pushed_from_wire, ttl_from_wire};
use crate::group::Registry;
use crate::proto::{self, peer_server::Peer};

/// The peer service of one node, over its registry of groups.
#[derive(Clone)]
pub struct PeerService {
    groups: Registry,
}

impl PeerService {
    /// Serves the groups of `groups`.
    pub fn new(groups: Registry) -> Self {
        PeerService { groups }
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
        let fetched = match req.relay {
            true => group.get_relayed_for_peer(&req.key, deadline).await?,
            false => group.get_for_peer(&req.key, deadline).await?,
        };
        Ok(Response::new(fetched.into()))
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
        let held = (self.groups.get(&req.group)?).peek_for_peer(&req.key, &req.asker)?;
        Ok(Response::new(held.into()))
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
