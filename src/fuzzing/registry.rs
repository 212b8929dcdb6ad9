//! The registry protocol: a run of calls from the input on a fresh registry's gRPC
//! handlers, with time advanced between them so leases expire, and watches polled
//! after every call. Rules: no panic; errors are the caller's (InvalidArgument,
//! NotFound, FailedPrecondition); the revision never goes back and every write moves
//! it on; a range is sorted and under its prefix; a watch delivers non-empty batches
//! in revision order, under its prefix, from its start.

use std::cell::Cell;
use std::pin::Pin;
use std::time::Duration;

use arbitrary::Arbitrary;
use futures::{FutureExt, Stream, StreamExt};
use tonic::{Code, Request, Status};

use super::{block_on, decode};
use crate::discovery::registry::{RegistryConfig, handlers};
use crate::proto::{self, registry_server::Registry as _};

/// At most this many calls per input, and this many open watches.
const MAX_CALLS: usize = 32;
const MAX_WATCHES: usize = 4;

#[derive(Debug, Arbitrary)]
struct Input {
    first_lease: i64,
    /// Events kept for replay (small, so compaction happens).
    history: u8,
    calls: Vec<Call>,
}

#[derive(Debug, Arbitrary)]
enum Call {
    Grant {
        ttl_ms: u64,
    },
    KeepAlive(LeaseRef),
    Revoke(LeaseRef),
    Put {
        key: String,
        value: Vec<u8>,
        lease: LeaseRef,
        if_absent: bool,
    },
    Delete(String),
    Range(String),
    Watch {
        prefix: String,
        start_revision: i64,
    },
    Advance {
        ms: u16,
    },
}

/// A lease: one granted earlier in the run (by index), or any id.
#[derive(Debug, Arbitrary)]
enum LeaseRef {
    Granted(u8),
    None,
    Raw(i64),
}

type Events = Pin<Box<dyn Stream<Item = Result<proto::WatchResponse, Status>> + Send>>;

/// An open watch and what it has delivered so far.
struct Watch {
    prefix: String,
    stream: Option<Events>,
    /// The lowest revision it may deliver next.
    next: i64,
}

impl Watch {
    /// Takes whatever the watch has ready and checks it.
    fn drain(&mut self) {
        while let Some(stream) = &mut self.stream {
            match stream.next().now_or_never() {
                None => return,
                Some(None) => self.stream = None,
                Some(Some(Err(status))) => {
                    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                    self.stream = None;
                }
                Some(Some(Ok(batch))) => {
                    assert!(!batch.events.is_empty(), "an empty watch batch");
                    for event in batch.events {
                        let kv = event.kv.expect("a watch event carries its key");
                        assert!(
                            kv.key.starts_with(&self.prefix),
                            "{kv:?} not under {:?}",
                            self.prefix
                        );
                        assert!(
                            kv.mod_revision >= self.next,
                            "{kv:?} out of order, want ≥ {}",
                            self.next
                        );
                        self.next = kv.mod_revision;
                    }
                }
            }
        }
    }
}

/// A run of registry calls from `data` on a fresh registry.
pub fn registry(data: &[u8]) {
    let Some(input) = decode::<Input>(data) else {
        return;
    };
    let config = RegistryConfig {
        first_lease: input.first_lease,
        history: usize::from(input.history),
        ..RegistryConfig::default()
    };
    block_on(async move {
        let (service, _close) = handlers(&config);
        let mut granted: Vec<i64> = Vec::new();
        let mut watches: Vec<Watch> = Vec::new();
        let revision = Cell::new(1i64);
        let lease_of = |r: &LeaseRef, granted: &[i64]| match r {
            LeaseRef::Granted(i) if !granted.is_empty() => granted[usize::from(*i) % granted.len()],
            LeaseRef::Granted(_) | LeaseRef::None => 0,
            LeaseRef::Raw(id) => *id,
        };
        // The revision an answer reports: never behind the last one seen.
        let seen = |r: i64, what: &str| {
            let last = revision.replace(r);
            assert!(r >= last, "{what}: revision {r} after {last}");
        };
        for call in input.calls.into_iter().take(MAX_CALLS) {
            let outcome = match call {
                Call::Grant { ttl_ms } => service
                    .grant(Request::new(proto::GrantRequest { ttl_ms }))
                    .await
                    .map(|a| {
                        let a = a.into_inner();
                        assert_eq!(a.ttl_ms, ttl_ms, "granted another TTL");
                        granted.push(a.lease);
                    }),
                Call::KeepAlive(lease) => {
                    let lease = lease_of(&lease, &granted);
                    (service
                        .keep_alive(Request::new(proto::KeepAliveRequest { lease }))
                        .await)
                        .map(drop)
                }
                Call::Revoke(lease) => {
                    let lease = lease_of(&lease, &granted);
                    (service
                        .revoke(Request::new(proto::RevokeRequest { lease }))
                        .await)
                        .map(|a| seen(a.into_inner().revision, "revoke"))
                }
                Call::Put {
                    key,
                    value,
                    lease,
                    if_absent,
                } => {
                    let lease = lease_of(&lease, &granted);
                    let before = revision.get();
                    let req = proto::PutRequest {
                        key,
                        value: value.into(),
                        lease,
                        if_absent,
                    };
                    (service.put(Request::new(req)).await).map(|a| {
                        let a = a.into_inner();
                        seen(a.revision, "put");
                        assert!(
                            !a.written || a.revision > before,
                            "a write at old revision {}",
                            a.revision
                        );
                    })
                }
                Call::Delete(key) => (service
                    .delete(Request::new(proto::DeleteRequest { key }))
                    .await)
                    .map(|a| seen(a.into_inner().revision, "delete")),
                Call::Range(prefix) => {
                    let req = proto::RangeRequest {
                        prefix: prefix.clone(),
                    };
                    (service.range(Request::new(req)).await).map(|a| {
                        let a = a.into_inner();
                        seen(a.revision, "range");
                        assert!(a.kvs.iter().all(|kv| kv.key.starts_with(&prefix)));
                        assert!(a.kvs.windows(2).all(|w| w[0].key < w[1].key), "unsorted");
                    })
                }
                Call::Watch {
                    prefix,
                    start_revision,
                } if watches.len() < MAX_WATCHES => {
                    let req = proto::WatchRequest {
                        prefix: prefix.clone(),
                        start_revision,
                    };
                    (service.watch(Request::new(req)).await).map(|stream| {
                        let next = if start_revision > 0 {
                            start_revision
                        } else {
                            revision.get() + 1
                        };
                        watches.push(Watch {
                            prefix,
                            stream: Some(Box::pin(stream.into_inner())),
                            next,
                        });
                    })
                }
                Call::Watch { .. } => Ok(()),
                Call::Advance { ms } => {
                    tokio::time::advance(Duration::from_millis(u64::from(ms))).await;
                    Ok(())
                }
            };
            if let Err(status) = outcome {
                let fine = matches!(
                    status.code(),
                    Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition
                );
                assert!(fine, "unexpected status {status:?}");
            }
            for watch in &mut watches {
                watch.drain();
            }
        }
    });
}
