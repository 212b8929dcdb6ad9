//! A client of one peer: a lazily connected tonic channel with timeouts and keep-alive.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tonic::transport::Channel;

use super::{Fetched, PeerFailure};
use crate::metrics::Metrics;
use crate::proto::{self, peer_client::PeerClient as Rpc};

/// A client of one peer. Cheap to clone; clones share the channel, which connects on
/// first use and reconnects after a failure.
#[derive(Clone)]
pub struct PeerClient {
    id: Arc<str>,
    rpc: Rpc<Channel>,
    metrics: Arc<Metrics>,
}

impl PeerClient {
    /// A client of peer `id` over `channel`.
    pub fn new(id: impl Into<Arc<str>>, channel: Channel, metrics: Arc<Metrics>) -> Self {
        PeerClient {
            id: id.into(),
            rpc: Rpc::new(channel)
                .max_decoding_message_size(super::MAX_MESSAGE)
                .max_encoding_message_size(super::MAX_MESSAGE),
            metrics,
        }
    }

    /// The peer's member id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Asks the peer, as the key's owner, for `key`; `deadline` is the caller's time left.
    pub async fn get(
        &self,
        group: &str,
        key: &str,
        deadline: Duration,
    ) -> Result<Fetched, PeerFailure> {
        let req = proto::GetRequest {
            group: group.to_owned(),
            key: key.to_owned(),
            deadline_ms: millis(for_the_peer(deadline)),
        };
        let resp = self
            .call(
                "get",
                deadline,
                |mut rpc, req| async move { rpc.get(req).await },
                req,
            )
            .await?;
        Ok(Fetched {
            value: resp.value,
            version: resp.version,
            expires_in: (resp.expires_in_ms > 0).then(|| Duration::from_millis(resp.expires_in_ms)),
        })
    }

    /// Asks the owner to store `value` under `key`; returns the version it assigned.
    pub async fn set(
        &self,
        group: &str,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
        deadline: Duration,
    ) -> Result<u64, PeerFailure> {
        let req = proto::SetRequest {
            group: group.to_owned(),
            key: key.to_owned(),
            value,
            ttl_ms: ttl.map_or(0, |t| millis(t).max(1)),
            codec: proto::Codec::Identity as i32,
            deadline_ms: millis(for_the_peer(deadline)),
        };
        let resp = self
            .call(
                "set",
                deadline,
                |mut rpc, req| async move { rpc.set(req).await },
                req,
            )
            .await?;
        Ok(resp.version)
    }

    /// Asks the owner to remove `key`; returns the version it assigned.
    pub async fn remove(
        &self,
        group: &str,
        key: &str,
        deadline: Duration,
    ) -> Result<u64, PeerFailure> {
        let req = proto::RemoveRequest {
            group: group.to_owned(),
            key: key.to_owned(),
            deadline_ms: millis(for_the_peer(deadline)),
        };
        let resp = self
            .call(
                "remove",
                deadline,
                |mut rpc, req| async move { rpc.remove(req).await },
                req,
            )
            .await?;
        Ok(resp.version)
    }

    /// Tells the peer to drop its copies of `key` older than `version`.
    pub async fn invalidate(
        &self,
        group: &str,
        key: &str,
        version: u64,
        deadline: Duration,
    ) -> Result<(), PeerFailure> {
        let req = proto::InvalidateRequest {
            group: group.to_owned(),
            key: key.to_owned(),
            version,
        };
        self.call(
            "invalidate",
            deadline,
            |mut rpc, req| async move { rpc.invalidate(req).await },
            req,
        )
        .await
        .map(drop)
    }

    /// One call with `deadline` as its gRPC timeout, timed into the metrics.
    async fn call<Req, Resp, F, Fut>(
        &self,
        name: &'static str,
        deadline: Duration,
        f: F,
        req: Req,
    ) -> Result<Resp, PeerFailure>
    where
        F: FnOnce(Rpc<Channel>, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        if deadline.is_zero() {
            return Err(PeerFailure::Answered(crate::Error::Timeout));
        }
        let mut req = tonic::Request::new(req);
        req.set_timeout(deadline);
        let started = tokio::time::Instant::now();
        // The grpc-timeout bounds the call once it is on a connection; a call queued
        // behind a connection attempt to a silent peer would wait for that attempt, so
        // our own timer bounds the whole of it.
        let result = match tokio::time::timeout(deadline, f(self.rpc.clone(), req)).await {
            Ok(answer) => answer
                .map(tonic::Response::into_inner)
                .map_err(PeerFailure::from),
            Err(_) => Err(PeerFailure::Unreachable(format!(
                "no answer within {deadline:?}"
            ))),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(PeerFailure::Answered(_)) => "error",
            Err(PeerFailure::Unreachable(_)) => "unreachable",
        };
        self.metrics
            .observe_peer_rpc(name, outcome, started.elapsed());
        result
    }
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerClient")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The deadline sent to the peer: a tenth shorter than ours, so a peer that runs out of
/// time answers "timeout" before our own timer fires and takes it for a lost peer.
fn for_the_peer(deadline: Duration) -> Duration {
    deadline - deadline / 10
}

/// Whole milliseconds, rounded up so a short positive deadline never becomes "none".
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Arc;

    use super::*;
    use crate::Registry;
    use crate::clock::ManualClock;
    use crate::net::transport::{self, ChannelTimeouts};
    use crate::net::{Net, TokioNet};

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

    /// Calls queued behind a connection attempt end at their own deadlines, not when the
    /// attempt gives up (here after 10 s).
    #[tokio::test(start_paused = true)]
    async fn calls_to_a_silent_peer_end_at_their_deadline() {
        let timeouts = ChannelTimeouts {
            connect: Duration::from_secs(10),
            keep_alive: Duration::from_secs(2),
        };
        let channel = transport::channel(Silent, "silent:7000", timeouts).unwrap();
        let metrics = Arc::new(Metrics::new(Registry::new(Arc::new(ManualClock::new()))));
        let peer = PeerClient::new("silent", channel, metrics);
        let started = tokio::time::Instant::now();
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
