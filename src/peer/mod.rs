//! Talking to peers: the gRPC client and service, the picker that maps a key to its
//! owner, and the error mapping between them.

use std::time::Duration;

use bytes::Bytes;

mod client;
mod picker;
mod server;
mod status;

pub use client::PeerClient;
pub use picker::{Connect, PeerPicker, Pick, View};
pub use server::PeerService;
pub use status::PeerFailure;

/// Largest gRPC message a node sends or accepts (values are limited per group, below).
pub const MAX_MESSAGE: usize = 64 << 20;

/// A value as the owner serves it to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The bytes.
    pub value: Bytes,
    /// The owner's version of the entry.
    pub version: u64,
    /// Time left to live at the owner; `None` if it never expires.
    pub expires_in: Option<Duration>,
}
