//! [`RegistryCoordinator`]: the [`Coordinator`] of a registry server, over gRPC through
//! the [`Net`] seam.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::millis;
use crate::discovery::{Coordinator, KeyValue, Lease, LeaseId, WatchEvent, WatchStream};
use crate::error::{Error, Result};
use crate::net::Net;
use crate::net::transport::{self, ChannelTimeouts};
use crate::proto::{self, registry_client::RegistryClient as Rpc};
use crate::time;

/// Timeouts of a [`RegistryCoordinator`].
#[derive(Debug, Clone, Copy)]
pub struct RegistryCoordinatorConfig {
    /// Longest wait for each call (and for a watch to be established).
    pub call_timeout: Duration,
    /// Connection set-up and HTTP/2 keep-alive: a watch over a connection that went
    /// silent (a partition drops segments for good) fails after about `keep_alive`
    /// instead of hanging.
    pub channel: ChannelTimeouts,
}

impl Default for RegistryCoordinatorConfig {
    fn default() -> Self {
        RegistryCoordinatorConfig {
            call_timeout: Duration::from_secs(1),
            channel: ChannelTimeouts {
                connect: Duration::from_secs(1),
                keep_alive: Duration::from_secs(1),
            },
        }
    }
}

/// A client of the registry at one address. The channel connects on first use and
/// reconnects after failures.
#[derive(Clone, Debug)]
pub struct RegistryCoordinator {
    rpc: Rpc<Channel>,
    call_timeout: Duration,
}

impl RegistryCoordinator {
    /// A client of the registry at `addr` (`host:port`), dialling through `net`.
    pub fn new<N: Net>(net: N, addr: &str, config: RegistryCoordinatorConfig) -> Result<Self> {
        let channel = transport::channel(net, addr, addr, config.channel, None)?;
        Ok(RegistryCoordinator {
            rpc: Rpc::new(channel),
            call_timeout: config.call_timeout,
        })
    }

    /// One call, bounded by the call timeout on both sides.
    async fn call<Req, Resp, F, Fut>(&self, f: F, req: Req) -> Result<Resp>
    where
        F: FnOnce(Rpc<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let mut req = tonic::Request::new(req);
        req.set_timeout(self.call_timeout);
        let answer = time::within(self.call_timeout, f(self.rpc.clone(), req)).await?;
        answer.map(tonic::Response::into_inner).map_err(error)
    }
}

/// The error a registry status means. Statuses the registry built from an [`Error`]
/// carry it back; compaction is `Invalid("compacted: …")`; the rest is the transport.
fn error(status: Status) -> Error {
    if status.code() == Code::FailedPrecondition {
        return Error::Invalid(status.message().to_owned());
    }
    crate::status::answered(&status).unwrap_or_else(|| {
        let why = format!("{:?}: {}", status.code(), status.message());
        Error::Unavailable(format!("registry: {why}"))
    })
}

#[async_trait]
impl Coordinator for RegistryCoordinator {
    async fn grant(&self, ttl: Duration) -> Result<Lease> {
        let req = proto::GrantRequest {
            ttl_ms: millis(ttl),
        };
        let resp = (self.call(|mut rpc, r| async move { rpc.grant(r).await }, req)).await?;
        Ok(Lease {
            id: resp.lease,
            ttl: Duration::from_millis(resp.ttl_ms),
        })
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Option<Duration>> {
        let req = proto::KeepAliveRequest { lease };
        match (self.call(|mut rpc, r| async move { rpc.keep_alive(r).await }, req)).await {
            Ok(resp) => Ok(Some(Duration::from_millis(resp.ttl_ms))),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn revoke(&self, lease: LeaseId) -> Result<()> {
        let req = proto::RevokeRequest { lease };
        match (self.call(|mut rpc, r| async move { rpc.revoke(r).await }, req)).await {
            Ok(_) | Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn create(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<Option<i64>> {
        let req = proto::PutRequest {
            key: key.to_owned(),
            value: value.into(),
            lease,
            if_absent: true,
        };
        let resp = (self.call(|mut rpc, r| async move { rpc.put(r).await }, req)).await?;
        Ok(resp.written.then_some(resp.revision))
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<i64> {
        let req = proto::PutRequest {
            key: key.to_owned(),
            value: value.into(),
            lease,
            if_absent: false,
        };
        let resp = (self.call(|mut rpc, r| async move { rpc.put(r).await }, req)).await?;
        Ok(resp.revision)
    }

    async fn delete(&self, key: &str) -> Result<i64> {
        let req = proto::DeleteRequest {
            key: key.to_owned(),
        };
        let resp = (self.call(|mut rpc, r| async move { rpc.delete(r).await }, req)).await?;
        Ok(resp.revision)
    }

    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)> {
        let req = proto::RangeRequest {
            prefix: prefix.to_owned(),
        };
        let resp = (self.call(|mut rpc, r| async move { rpc.range(r).await }, req)).await?;
        Ok((
            resp.kvs.into_iter().map(Into::into).collect(),
            resp.revision,
        ))
    }

    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream> {
        let req = proto::WatchRequest {
            prefix: prefix.to_owned(),
            start_revision: from_revision,
        };
        // No grpc-timeout here: it would cut the stream, which lives as long as it is read.
        let mut rpc = self.rpc.clone();
        let answer = time::within(self.call_timeout, rpc.watch(req)).await?;
        let responses = answer.map_err(error)?.into_inner();
        Ok(responses
            .map(|resp| {
                let resp = resp.map_err(error)?;
                resp.events.into_iter().map(WatchEvent::try_from).collect()
            })
            .boxed())
    }
}
