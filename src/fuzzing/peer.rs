//! The peer service's handlers, called directly with requests built from the input
//! (fields chosen by `arbitrary`, or whole messages prost-decoded from raw bytes), a
//! few calls in a row on one node. Rules: no panic; an error is the caller's
//! (InvalidArgument, NotFound, …), never Internal but for a failed load; and the
//! version a write answers is one the invalidation of that write carries, so a peer
//! must accept it.

use arbitrary::Arbitrary;
use prost::Message;
use tonic::{Code, Request, Status};

use super::{GroupName, Key, block_on, decode, node};
use crate::grpc::PeerService;
use crate::proto::{self, peer_server::Peer};

/// At most this many calls per input, so one run stays short.
const MAX_CALLS: usize = 16;

#[derive(Debug, Arbitrary)]
enum Call {
    Get {
        group: GroupName,
        key: Key,
        deadline_ms: u64,
        relay: bool,
        accept: Vec<i32>,
        max_reply_bytes: u64,
    },
    GetMany {
        group: GroupName,
        keys: Vec<Key>,
        deadline_ms: u64,
        accept: Vec<i32>,
        max_reply_bytes: u64,
    },
    Set {
        group: GroupName,
        key: Key,
        value: Vec<u8>,
        ttl_ms: u64,
        codec: i32,
        deadline_ms: u64,
    },
    Remove {
        group: GroupName,
        key: Key,
        deadline_ms: u64,
    },
    Invalidate {
        group: GroupName,
        key: Key,
        version: u64,
    },
    Peek {
        group: GroupName,
        key: Key,
        asker: String,
        accept: Vec<i32>,
    },
    Push {
        group: GroupName,
        entries: Vec<(Key, Vec<u8>, u64, u64, i32)>,
    },
    /// A message of the kind `kind` (mod 7) prost-decoded from `bytes`.
    Wire { kind: u8, bytes: Vec<u8> },
}

/// A decoded request of any of the seven kinds.
enum Req {
    Get(proto::GetRequest),
    GetMany(proto::GetManyRequest),
    Set(proto::SetRequest),
    Remove(proto::RemoveRequest),
    Invalidate(proto::InvalidateRequest),
    Peek(proto::PeekRequest),
    Push(proto::PushRequest),
}

impl Call {
    fn into_request(self) -> Option<Req> {
        use Req as R;
        Some(match self {
            Call::Get {
                group,
                key,
                deadline_ms,
                relay,
                accept,
                max_reply_bytes,
            } => R::Get(proto::GetRequest {
                group: group.name().to_owned(),
                key: key.text(),
                deadline_ms,
                relay,
                accept,
                max_reply_bytes,
            }),
            Call::GetMany {
                group,
                keys,
                deadline_ms,
                accept,
                max_reply_bytes,
            } => R::GetMany(proto::GetManyRequest {
                group: group.name().to_owned(),
                keys: keys.into_iter().map(|k| k.text()).collect(),
                deadline_ms,
                accept,
                max_reply_bytes,
            }),
            Call::Set {
                group,
                key,
                value,
                ttl_ms,
                codec,
                deadline_ms,
            } => R::Set(proto::SetRequest {
                group: group.name().to_owned(),
                key: key.text(),
                value: value.into(),
                ttl_ms,
                codec,
                deadline_ms,
            }),
            Call::Remove {
                group,
                key,
                deadline_ms,
            } => R::Remove(proto::RemoveRequest {
                group: group.name().to_owned(),
                key: key.text(),
                deadline_ms,
            }),
            Call::Invalidate {
                group,
                key,
                version,
            } => R::Invalidate(proto::InvalidateRequest {
                group: group.name().to_owned(),
                key: key.text(),
                version,
            }),
            Call::Peek {
                group,
                key,
                asker,
                accept,
            } => R::Peek(proto::PeekRequest {
                group: group.name().to_owned(),
                key: key.text(),
                deadline_ms: 0,
                asker,
                accept,
            }),
            Call::Push { group, entries } => R::Push(proto::PushRequest {
                group: group.name().to_owned(),
                entries: (entries.into_iter())
                    .map(
                        |(key, value, version, expires_in_ms, codec)| proto::PushEntry {
                            key: key.text(),
                            value: value.into(),
                            version,
                            expires_in_ms,
                            codec,
                        },
                    )
                    .collect(),
                deadline_ms: 0,
            }),
            Call::Wire { kind, bytes } => {
                let bytes = bytes.as_slice();
                match kind % 7 {
                    0 => R::Get(proto::GetRequest::decode(bytes).ok()?),
                    5 => R::GetMany(proto::GetManyRequest::decode(bytes).ok()?),
                    1 => R::Set(proto::SetRequest::decode(bytes).ok()?),
                    2 => R::Remove(proto::RemoveRequest::decode(bytes).ok()?),
                    3 => R::Peek(proto::PeekRequest::decode(bytes).ok()?),
                    4 => R::Push(proto::PushRequest::decode(bytes).ok()?),
                    _ => R::Invalidate(proto::InvalidateRequest::decode(bytes).ok()?),
                }
            }
        })
    }
}

/// A few peer calls from `data` on a fresh node.
pub fn peer(data: &[u8]) {
    let Some(calls) = decode::<Vec<Call>>(data) else {
        return;
    };
    let (groups, _picker) = node();
    let service = PeerService::new(groups);
    block_on(async move {
        for call in calls.into_iter().take(MAX_CALLS) {
            let Some(req) = call.into_request() else {
                continue;
            };
            let written = match req {
                Req::Get(r) => service.get(Request::new(r)).await.map(|_| None),
                Req::GetMany(r) => service.get_many(Request::new(r)).await.map(|_| None),
                Req::Set(r) => {
                    let (group, key) = (r.group.clone(), r.key.clone());
                    (service.set(Request::new(r)).await)
                        .map(|a| Some((group, key, a.into_inner().version)))
                }
                Req::Remove(r) => {
                    let (group, key) = (r.group.clone(), r.key.clone());
                    (service.remove(Request::new(r)).await)
                        .map(|a| Some((group, key, a.into_inner().version)))
                }
                Req::Invalidate(r) => service.invalidate(Request::new(r)).await.map(|_| None),
                Req::Peek(r) => service.peek(Request::new(r)).await.map(|_| None),
                Req::Push(r) => service.push(Request::new(r)).await.map(|_| None),
            };
            match written {
                Ok(Some((group, key, version))) => {
                    let echo = proto::InvalidateRequest {
                        group,
                        key,
                        version,
                    };
                    let echoed = service.invalidate(Request::new(echo)).await;
                    assert!(
                        echoed.is_ok(),
                        "the invalidation of a write at version {version} is refused: {echoed:?}"
                    );
                }
                Ok(None) => {}
                Err(status) => check(&status),
            }
        }
    });
}

/// An error a peer may answer: the caller's mistake or the source's failure.
fn check(status: &Status) {
    let load = status
        .metadata()
        .get("pc-error")
        .is_some_and(|k| k == "load");
    let fine = match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::DeadlineExceeded
        | Code::Unavailable
        | Code::FailedPrecondition => true,
        Code::Internal => load,
        _ => false,
    };
    assert!(fine, "unexpected status {status:?}");
}
