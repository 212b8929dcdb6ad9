//! The gRPC service peers call: decode, call the group, encode.

use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::group::Registry;
use crate::proto::{self, peer_server::Peer};

/// Deadline applied to a peer's get that carries none.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);
/// Longest deadline a peer may ask for.
const MAX_DEADLINE: Duration = Duration::from_secs(60);

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
}

fn deadline(ms: u64) -> Duration {
    match ms {
        0 => DEFAULT_DEADLINE,
        ms => Duration::from_millis(ms).min(MAX_DEADLINE),
    }
}

fn identity(codec: i32) -> Result<(), Status> {
    if codec == proto::Codec::Identity as i32 {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "codec {codec} is not supported; send identity"
        )))
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
        let fetched = group
            .get_for_peer(&req.key, deadline(req.deadline_ms))
            .await?;
        Ok(Response::new(proto::GetResponse {
            value: fetched.value,
            version: fetched.version,
            // 0 means "never expires", so a live entry reports at least 1 ms.
            expires_in_ms: fetched.expires_in.map_or(0, |d| {
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
            }),
            codec: proto::Codec::Identity as i32,
            hot: false,
        }))
    }

    async fn set(
        &self,
        req: Request<proto::SetRequest>,
    ) -> Result<Response<proto::SetResponse>, Status> {
        let req = req.into_inner();
        identity(req.codec)?;
        let group = self.groups.get(&req.group)?;
        let ttl = (req.ttl_ms > 0).then(|| Duration::from_millis(req.ttl_ms));
        let version = group
            .write_for_peer(&req.key, Some(req.value), ttl, deadline(req.deadline_ms))
            .await?;
        Ok(Response::new(proto::SetResponse { version }))
    }

    async fn remove(
        &self,
        req: Request<proto::RemoveRequest>,
    ) -> Result<Response<proto::RemoveResponse>, Status> {
        let req = req.into_inner();
        let group = self.groups.get(&req.group)?;
        let version = group
            .write_for_peer(&req.key, None, None, deadline(req.deadline_ms))
            .await?;
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
}
