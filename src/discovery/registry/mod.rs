//! The registry: a small discovery service with etcd's lease semantics, served over gRPC
//! (proto/peercache/v1/registry.proto) through the [`Net`](crate::net::Net) seam, so the
//! simulator has an etcd and tests need no external process.
//!
//! ```text
//!  LeasedDiscovery ── RegistryCoordinator ──gRPC──▶ serve_registry
//!    (per node)          (Coordinator)                 └─ Store: keys, leases,
//!                                                         revision, history
//! ```
//!
//! One process, one mutex, state in memory: a restarted registry starts empty at
//! revision 1 (clients re-register, see [`LeasedDiscovery`](super::LeasedDiscovery)).
//! Time is tokio's, so turmoil drives lease expiry in the simulator.

use std::time::Duration;

use crate::discovery::{KeyValue, LeaseId, WatchEvent};
use crate::error::{Error, Result};
use crate::proto;
use crate::time::millis;

mod client;
mod server;
mod store;

pub use client::{RegistryCoordinator, RegistryCoordinatorConfig};
#[cfg(feature = "fuzzing")]
pub(crate) use server::handlers;
pub use server::serve_registry;

/// How a registry server runs.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// The first lease id handed out; later ones count up from it, so a run is
    /// deterministic. Give a restarted registry a different start, so a client still
    /// holding a lease of the previous incarnation cannot keep someone else's alive.
    pub first_lease: LeaseId,
    /// Events kept for watches to replay; a watch from an older revision fails as
    /// compacted.
    pub history: usize,
    /// HTTP/2 ping interval (and ping timeout) towards clients, so the watch of a client
    /// that vanished without closing its connection is dropped.
    pub keep_alive: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            first_lease: 1,
            history: 10_000,
            keep_alive: Duration::from_secs(2),
        }
    }
}

impl From<KeyValue> for proto::KeyValue {
    fn from(kv: KeyValue) -> Self {
        proto::KeyValue {
            key: kv.key,
            value: kv.value.into(),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            lease: kv.lease,
        }
    }
}

impl From<proto::KeyValue> for KeyValue {
    fn from(kv: proto::KeyValue) -> Self {
        KeyValue {
            key: kv.key,
            value: kv.value.into(),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            lease: kv.lease,
        }
    }
}

impl From<WatchEvent> for proto::Event {
    fn from(e: WatchEvent) -> Self {
        match e {
            WatchEvent::Put(kv) => proto::Event {
                r#type: proto::EventType::Put as i32,
                kv: Some(kv.into()),
            },
            WatchEvent::Delete { key, revision } => proto::Event {
                r#type: proto::EventType::Delete as i32,
                kv: Some(proto::KeyValue {
                    key,
                    mod_revision: revision,
                    ..proto::KeyValue::default()
                }),
            },
        }
    }
}

impl TryFrom<proto::Event> for WatchEvent {
    type Error = Error;

    fn try_from(e: proto::Event) -> Result<Self> {
        let kv =
            e.kv.ok_or_else(|| Error::Invalid("watch event without a key".into()))?;
        match proto::EventType::try_from(e.r#type) {
            Ok(proto::EventType::Put) => Ok(WatchEvent::Put(kv.into())),
            Ok(proto::EventType::Delete) => Ok(WatchEvent::Delete {
                key: kv.key,
                revision: kv.mod_revision,
            }),
            Err(_) => Err(Error::Invalid(format!("unknown event type {}", e.r#type))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_the_wire() {
        let put = WatchEvent::Put(KeyValue {
            key: "k".into(),
            value: b"v".to_vec(),
            create_revision: 2,
            mod_revision: 3,
            lease: 7,
        });
        let delete = WatchEvent::Delete {
            key: "k".into(),
            revision: 4,
        };
        for e in [put, delete] {
            assert_eq!(WatchEvent::try_from(proto::Event::from(e.clone())), Ok(e));
        }
        assert!(WatchEvent::try_from(proto::Event::default()).is_err());
        assert_eq!(millis(Duration::from_micros(1)), 1);
    }
}
