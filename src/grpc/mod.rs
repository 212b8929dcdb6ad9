//! The peer protocol over gRPC (tonic): the client that implements
//! [`PeerClient`](crate::peer::PeerClient), the service that answers it from a node's
//! groups, and every proto ↔ domain conversion.
//!
//! ```text
//!  Group ──PeerClient──► GrpcPeer ──gRPC──► PeerService ──► Group::get_for_peer
//!                                                           Group::write_for_peer
//!                                                           Group::invalidate
//! ```

use std::sync::Arc;

use crate::group::Registry;
use crate::net::Net;
use crate::net::transport::{self, ChannelTimeouts};
use crate::peer::{CallObserver, Connect, PeerRef};
use crate::proto::peer_server::PeerServer;
use crate::ring::Member;
use crate::tls::Tls;

mod batch;
mod client;
mod convert;
mod service;
mod stream;

pub use batch::{Coalescing, DEFAULT_BATCH_CALLS, DEFAULT_BATCH_KEYS};
pub use client::GrpcPeer;
pub use service::PeerService;

/// Room in a peer message besides one key and one value: the group name, the other
/// fields, the framing.
pub const ENVELOPE: usize = 64 << 10;

/// The largest gRPC message a node with `groups` sends or accepts: the largest key and
/// value any of its groups allows, plus [`ENVELOPE`]. Groups are configured before the
/// node starts, and this is read then. A larger message is refused at the transport
/// (`ResourceExhausted`) from its length prefix, before it is read into memory.
pub fn message_limit(groups: &Registry) -> usize {
    let groups = groups.groups();
    let largest = groups.iter().map(|g| {
        let (key, value) = g.limits();
        key.saturating_add(value)
    });
    largest.max().unwrap_or(0).saturating_add(ENVELOPE)
}

/// The tonic service of `service`, with the message limits of its groups.
pub fn server(service: PeerService) -> PeerServer<PeerService> {
    let limit = message_limit(service.groups());
    PeerServer::new(service)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit)
}

/// Makes gRPC peers that dial through `net` (with `tls`, over mutual TLS that checks the
/// peer's certificate names its member id), accept messages up to `limit` bytes (see
/// [`message_limit`]), coalesce gets as `coalescing` says (batch.rs) and report their
/// calls to `observer`.
pub fn connector<N: Net>(
    net: N,
    timeouts: ChannelTimeouts,
    tls: Option<Arc<Tls>>,
    limit: usize,
    coalescing: Coalescing,
    observer: Arc<dyn CallObserver>,
) -> Connect {
    Box::new(move |member: &Member| {
        let channel =
            transport::channel(net.clone(), &member.id, &member.addr, timeouts, tls.clone())?;
        let peer = GrpcPeer::new(member.id.as_str(), channel, limit, observer.clone())
            .with_coalescing(coalescing);
        Ok(Arc::new(peer) as PeerRef)
    })
}
