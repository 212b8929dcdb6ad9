//! The coordination backend [`LeasedDiscovery`](super::LeasedDiscovery) runs on: a
//! key-value store with etcd's leases, revisions and prefix watches.
//! [`EtcdCoordinator`](super::EtcdCoordinator) is etcd itself; the simulator's
//! [registry](super::registry) implements the same semantics, and the conformance suite
//! (`tests/conformance/`) holds both to them.
//!
//! The semantics are etcd's v3 API, restricted to what discovery needs:
//!
//! - One store-wide **revision**, 1 for an empty store, bumped by one by every write
//!   that changes something (a put, the delete of an existing key, the revocation or
//!   expiry of a lease that had keys: all its keys go at one revision). Reads, grants,
//!   keep-alives and writes that change nothing leave it alone.
//! - A **lease** has a time to live; each keep-alive restarts it. When it expires or is
//!   revoked, every key attached to it is deleted. A put attaches the key to the put's
//!   lease (detaching it from any previous one); lease 0 means none.
//! - A **watch** on a prefix from revision `r` delivers every change to keys under the
//!   prefix with revision `>= r`, in revision order, and then follows new ones. A
//!   revision the store has compacted away cannot be watched from: the call or the
//!   stream fails, and the watcher re-reads with [`range`](Coordinator::range).

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::error::Result;

/// A lease's id; 0 means "no lease".
pub type LeaseId = i64;

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Its id, never 0.
    pub id: LeaseId,
    /// The time to live actually granted: etcd raises short ones to its minimum.
    pub ttl: Duration,
}

/// A key and its value, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// Revision of the write that created the key (since it was last absent).
    pub create_revision: i64,
    /// Revision of the last write to the key.
    pub mod_revision: i64,
    /// The lease the key is attached to; 0 for none.
    pub lease: LeaseId,
}

/// One change under a watched prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was written; `mod_revision` is the write's revision.
    Put(KeyValue),
    /// The key was deleted (by a delete, or with its lease) at `revision`.
    Delete {
        /// The deleted key.
        key: String,
        /// Revision of the deletion.
        revision: i64,
    },
}

impl WatchEvent {
    /// The key the event is about.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }

    /// The revision of the change.
    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }
}

/// The changes a watch delivers, in batches (never empty) in revision order. An error
/// ends the watch.
pub type WatchStream = BoxStream<'static, Result<Vec<WatchEvent>>>;

/// A key-value store with etcd's leases, revisions and watches (see the module docs).
///
/// Errors: an unknown lease is [`Error::NotFound`](crate::Error::NotFound); a backend
/// that cannot be reached is [`Error::Unavailable`](crate::Error::Unavailable) or
/// [`Error::Timeout`](crate::Error::Timeout). No call waits forever.
#[async_trait]
pub trait Coordinator: Send + Sync + 'static {
    /// Grants a lease of (at least) `ttl`.
    async fn grant(&self, ttl: Duration) -> Result<Lease>;

    /// Restarts the lease's time to live and returns it; `None` if the lease is gone
    /// (expired or revoked).
    async fn keep_alive(&self, lease: LeaseId) -> Result<Option<Duration>>;

    /// Revokes the lease, deleting its keys. A lease that is already gone is not an
    /// error.
    async fn revoke(&self, lease: LeaseId) -> Result<()>;

    /// Writes `key` only if it does not exist; returns the write's revision, or `None`
    /// (nothing written) if the key exists.
    async fn create(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<Option<i64>>;

    /// Writes `key`, attached to `lease` (0: none); returns the write's revision.
    async fn put(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<i64>;

    /// Deletes `key`; returns the delete's revision, or the current revision if the key
    /// was absent (then nothing changes and no event is emitted).
    async fn delete(&self, key: &str) -> Result<i64>;

    /// The keys under `prefix`, sorted by key, and the store revision they reflect.
    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64)>;

    /// Changes under `prefix` from `from_revision` on (0: from the next write). Watch
    /// from a [`range`](Coordinator::range)'s revision + 1 to miss nothing.
    async fn watch(&self, prefix: &str, from_revision: i64) -> Result<WatchStream>;
}
