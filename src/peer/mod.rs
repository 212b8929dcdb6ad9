//! The peer seam: what a group asks of the member that owns a key, and the picker that
//! maps keys to members.
//!
//! [`PeerClient`] speaks plain domain types; the gRPC client (`crate::grpc`) is one
//! implementation, and tests wire groups to in-process fakes. Nothing here knows tonic.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::codec::Codec;
use crate::error::Error;

mod picker;
mod suspicion;

pub use picker::{Connect, DEFAULT_HANDOFF_WINDOW, PeerPicker, Pick, View};
pub use suspicion::{MIN_EVIDENCE, Suspicious};

/// A value as the owner serves it to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The bytes.
    pub value: Bytes,
    /// The owner's version of the entry.
    pub version: u64,
    /// Time left to live at the owner; `None` if it never expires.
    pub expires_in: Option<Duration>,
    /// The owner finds the key hot and suggests the asker keep a copy.
    pub hot: bool,
    /// The value as it crossed the link when the owner sent it compressed, in this
    /// codec (`value` is it decoded, within the value limit); `None` when it came as it
    /// is. Passed on as it is to clients that decode the codec (HTTP
    /// `Accept-Encoding`).
    pub packed: Option<(Codec, Bytes)>,
}

/// How a call to a peer failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerFailure {
    /// The peer answered with this error.
    Answered(Error),
    /// The peer was not reached, or did not answer in time.
    Unreachable(String),
}

/// Another member, as the owner of keys. Every call carries the caller's time left
/// (`deadline`); a call not answered within it is [`PeerFailure::Unreachable`].
///
/// The receiver treats each call as addressed to the key's owner and never forwards
/// it: that is what keeps two nodes with different views from asking each other in a
/// loop. The one exception is [`PeerClient::get_relayed`], forwarded at most once, to
/// the owner, as a plain get.
#[async_trait]
pub trait PeerClient: Send + Sync + Debug + 'static {
    /// The member's id.
    fn id(&self) -> &str;

    /// How much longer the member is suspected of being unreachable (calls to it fail at
    /// once meanwhile); `None` while it is trusted. Only [`Suspicious`] suspects.
    fn suspected_for(&self) -> Option<std::time::Duration> {
        None
    }

    /// The value of `key` in `group`, from the owner's cache or its loader.
    async fn get(&self, group: &str, key: &str, deadline: Duration)
    -> Result<Fetched, PeerFailure>;

    /// [`PeerClient::get`] of a key whose owner the caller could not reach, sent to the
    /// member that would own it without that owner: if the member does not own the key
    /// but can reach its owner, it asks the owner (a plain get) and answers with that;
    /// else it answers as a get. Without support for it, a plain get.
    async fn get_relayed(
        &self,
        group: &str,
        key: &str,
        deadline: Duration,
    ) -> Result<Fetched, PeerFailure> {
        self.get(group, key, deadline).await
    }

    /// Stores `value` under `key` at a new version, which it returns.
    async fn set(
        &self,
        group: &str,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
        deadline: Duration,
    ) -> Result<u64, PeerFailure>;

    /// Removes `key` at a new version, which it returns.
    async fn remove(&self, group: &str, key: &str, deadline: Duration) -> Result<u64, PeerFailure>;

    /// Drops the member's copies of `key` older than `version` (after the owner's write).
    async fn invalidate(
        &self,
        group: &str,
        key: &str,
        version: u64,
        deadline: Duration,
    ) -> Result<(), PeerFailure>;

    /// The entry of `key` the member holds in memory (as its owner, or since it handed
    /// the key on after a membership change), never loaded for this call; `None` if it
    /// holds none. Asked by a key's new owner, member `asker`, of its previous one.
    async fn peek(
        &self,
        group: &str,
        key: &str,
        asker: &str,
        deadline: Duration,
    ) -> Result<Option<Fetched>, PeerFailure>;

    /// Hands `entries` (key, entry at its version) to the member, their owner once this
    /// node has left; returns how many it kept (the others were stale or did not fit).
    async fn push(
        &self,
        group: &str,
        entries: Vec<(String, Fetched)>,
        deadline: Duration,
    ) -> Result<usize, PeerFailure>;
}

/// A peer as the picker and the groups hold it.
pub type PeerRef = Arc<dyn PeerClient>;

/// How a call to a peer ended, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with a value or an acknowledgement.
    Ok,
    /// Answered with an error of its own.
    Error,
    /// Not reached, or no answer in time.
    Unreachable,
}

impl Outcome {
    /// Of a call's result.
    pub fn of<T>(result: &Result<T, PeerFailure>) -> Self {
        match result {
            Ok(_) => Outcome::Ok,
            Err(PeerFailure::Answered(_)) => Outcome::Error,
            Err(PeerFailure::Unreachable(_)) => Outcome::Unreachable,
        }
    }

    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Unreachable => "unreachable",
        }
    }
}

/// Told of every call a peer client makes: which RPC, how it ended, how long it took.
pub trait CallObserver: Send + Sync + 'static {
    /// One call ended.
    fn observe(&self, rpc: &'static str, outcome: Outcome, took: Duration);

    /// A GetMany call of `keys` gets coalesced into one is being sent.
    fn observe_batch(&self, keys: usize) {
        let _ = keys;
    }

    /// An answer's values that came compressed took `took` to decompress (the asker
    /// checks every frame before keeping or passing on anything).
    fn observe_decode(&self, took: Duration) {
        let _ = took;
    }

    /// A stream of gets to a peer was opened (GetStream): once per connection unless
    /// streams keep breaking.
    fn observe_stream_opened(&self) {}
}

/// An observer that keeps nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unobserved;

impl CallObserver for Unobserved {
    fn observe(&self, _: &'static str, _: Outcome, _: Duration) {}
}
