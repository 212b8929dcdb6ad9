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

use crate::net::Net;
use crate::net::transport::{self, ChannelTimeouts};
use crate::peer::{CallObserver, Connect, PeerRef};
use crate::proto::peer_server::PeerServer;
use crate::ring::Member;

mod client;
mod convert;
mod service;

pub use client::GrpcPeer;
pub use service::PeerService;

/// Largest gRPC message a node sends or accepts (values are limited per group, below).
pub const MAX_MESSAGE: usize = 64 << 20;

/// The tonic service of `service`, with the message limits.
pub fn server(service: PeerService) -> PeerServer<PeerService> {
    PeerServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// Makes gRPC peers that dial through `net` and report their calls to `observer`.
pub fn connector<N: Net>(
    net: N,
    timeouts: ChannelTimeouts,
    observer: Arc<dyn CallObserver>,
) -> Connect {
    Box::new(move |member: &Member| {
        let channel = transport::channel(net.clone(), &member.addr, timeouts)?;
        let peer = GrpcPeer::new(member.id.as_str(), channel, observer.clone());
        Ok(Arc::new(peer) as PeerRef)
    })
}
