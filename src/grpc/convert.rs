//! Every conversion between the peer protocol and the domain, in one place: answers,
//! deadlines and TTLs in milliseconds, codecs, and a failed call as a [`PeerFailure`]
//! (the peer's own [`Error`], carried back by `crate::status`, or the transport's).

use std::time::Duration;

use tonic::Status;

use bytes::Bytes;

use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::peer::{Fetched, PeerFailure};
use crate::proto;
use crate::time::millis;

/// Deadline applied to a peer's request that carries none.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);
/// Longest deadline a peer may ask for.
const MAX_DEADLINE: Duration = Duration::from_secs(60);

/// The deadline sent with a call whose caller has `ours` left: a tenth shorter, so a
/// peer that runs out of time answers "timeout" before our own timer fires and takes it
/// for a lost peer; whole milliseconds, rounded up so it never becomes 0 ("none").
pub(super) fn deadline_to_wire(ours: Duration) -> u64 {
    millis(ours - ours / 10)
}

/// A deadline as received: none means the default, and no peer may ask for more than
/// the maximum.
pub(super) fn deadline_from_wire(ms: u64) -> Duration {
    match ms {
        0 => DEFAULT_DEADLINE,
        ms => Duration::from_millis(ms).min(MAX_DEADLINE),
    }
}

/// A TTL as sent: 0 means the group's default, so a set TTL is at least 1 ms.
pub(super) fn ttl_to_wire(ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, |t| millis(t).max(1))
}

/// A TTL as received.
pub(super) fn ttl_from_wire(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// Only raw values travel today; the other codecs of the protocol are reserved.
pub(super) fn check_codec(codec: i32) -> Result<(), Status> {
    if codec == proto::Codec::Identity as i32 {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "codec {codec} is not supported; send identity"
        )))
    }
}

/// Time left to live as sent: 0 means "never expires", so a live entry reports at
/// least 1 ms.
fn expires_to_wire(expires_in: Option<Duration>) -> u64 {
    expires_in.map_or(0, |d| {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
    })
}

/// Every codec this node decodes, as a get advertises them (`accept`).
pub(super) fn accepted() -> Vec<i32> {
    (Codec::ALL.into_iter())
        .filter(|&c| c != Codec::Identity)
        .map(|c| c.wire() as i32)
        .collect()
}

/// The codecs of a get's `accept` this node knows (others are ignored: a newer peer's).
pub(super) fn accept_from_wire(accept: &[i32]) -> Vec<Codec> {
    (accept.iter())
        .filter_map(|&c| Codec::from_wire(c).ok())
        .collect()
}

/// A value from a peer in `codec`, decoded within `limit` bytes, and the bytes as they
/// came when they were compressed: a corrupt frame, an unknown codec or one that would
/// expand past the limit (a decompression bomb) is the peer's error, and nothing of it
/// is kept.
fn read_value(
    value: Bytes,
    codec: i32,
    limit: usize,
) -> Result<(Bytes, Option<(Codec, Bytes)>), PeerFailure> {
    let refuse = |e: Error| PeerFailure::Answered(Error::load(format!("the owner's value: {e}")));
    match Codec::from_wire(codec).map_err(refuse)? {
        Codec::Identity => Ok((value, None)),
        codec => {
            let raw = codec.decode(&value, limit).map_err(refuse)?;
            Ok((Bytes::from(raw), Some((codec, value))))
        }
    }
}

/// A get's answer: `f`'s value is in `codec` (as the owner keeps it).
pub(super) fn get_response((f, codec): (Fetched, Codec)) -> proto::GetResponse {
    proto::GetResponse {
        value: f.value,
        version: f.version,
        expires_in_ms: expires_to_wire(f.expires_in),
        codec: codec.wire() as i32,
        hot: f.hot,
    }
}

/// A get's answer as received, its value decoded within `limit` bytes.
pub(super) fn fetched_from_wire(
    r: proto::GetResponse,
    limit: usize,
) -> Result<Fetched, PeerFailure> {
    let (value, packed) = read_value(r.value, r.codec, limit)?;
    Ok(Fetched {
        value,
        packed,
        version: r.version,
        expires_in: ttl_from_wire(r.expires_in_ms),
        hot: r.hot,
    })
}

/// Room for a value in an answer to an asker whose message limit is `max_reply_bytes`
/// (0: not said, an older asker: no limit of its own), less the envelope as this
/// node's own budget is.
pub(super) fn asker_room(max_reply_bytes: u64) -> usize {
    match max_reply_bytes {
        0 => usize::MAX,
        limit => usize::try_from(limit).unwrap_or(usize::MAX),
    }
    .saturating_sub(super::ENVELOPE)
}

/// The answer for a value of `len` bytes past the asker's `room`: a load error, as a
/// value past the asker's limit from its own source would be.
pub(super) fn past_asker_room(len: usize, room: usize) -> Error {
    Error::load(format!(
        "the owner's value is {len} bytes: past the {room} bytes the asking member reads"
    ))
}

/// What travels for one key of a GetMany besides its value: the entry's other fields
/// and framing, counted against the message limit.
const ENTRY_OVERHEAD: usize = 48;

/// The answer to a GetMany: each key's result in order, as long as the values fit in
/// `budget` bytes; the keys after that get an empty entry (the caller asks alone). A
/// value longer than `largest` (what the asker can read) is that key's load error
/// ([`past_asker_room`]); any other first key gets its answer, as the message limit
/// fits one value.
pub(super) fn many_to_wire(
    results: Vec<Result<(Fetched, Codec)>>,
    budget: usize,
    largest: usize,
) -> proto::GetManyResponse {
    let mut used = 0usize;
    let entries = (results.into_iter().enumerate())
        .map(|(i, result)| {
            let result = match result {
                Ok(fetched) if fetched.0.value.len() > largest => {
                    let e = past_asker_room(fetched.0.value.len(), largest);
                    let (kind, message) = crate::status::parts(&e);
                    proto::get_many_entry::Result::Error(proto::KeyError { kind, message })
                }
                Ok(fetched) => {
                    used = used.saturating_add(fetched.0.value.len() + ENTRY_OVERHEAD);
                    if i > 0 && used > budget {
                        return proto::GetManyEntry { result: None };
                    }
                    proto::get_many_entry::Result::Found(get_response(fetched))
                }
                Err(e) => {
                    let (kind, message) = crate::status::parts(&e);
                    proto::get_many_entry::Result::Error(proto::KeyError { kind, message })
                }
            };
            proto::GetManyEntry {
                result: Some(result),
            }
        })
        .collect();
    proto::GetManyResponse { entries }
}

/// Each key's answer in a GetMany's response to `n` keys: `None` for a key left out
/// (ask alone). A response with another number of entries is refused for every key.
pub(super) fn many_from_wire(
    r: proto::GetManyResponse,
    n: usize,
    limit: usize,
) -> Vec<Option<Result<Fetched, PeerFailure>>> {
    if r.entries.len() != n {
        let wrong = PeerFailure::Answered(Error::load(format!(
            "the owner answered {} entries to {n} keys",
            r.entries.len()
        )));
        return vec![Some(Err(wrong)); n];
    }
    (r.entries.into_iter())
        .map(|e| match e.result? {
            proto::get_many_entry::Result::Found(found) => Some(fetched_from_wire(found, limit)),
            proto::get_many_entry::Result::Error(e) => Some(Err(PeerFailure::Answered(
                crate::status::from_parts(&e.kind, e.message),
            ))),
        })
        .collect()
}

/// A peek's answer: `held`'s value is in its codec (as the member keeps it).
pub(super) fn peek_response(held: Option<(Fetched, Codec)>) -> proto::PeekResponse {
    match held {
        None => proto::PeekResponse::default(),
        Some((f, codec)) => proto::PeekResponse {
            found: true,
            value: f.value,
            version: f.version,
            expires_in_ms: expires_to_wire(f.expires_in),
            codec: codec.wire() as i32,
        },
    }
}

/// A peek's answer as received, its value decoded within `limit` bytes (a corrupt
/// frame or a bomb is the member's error, as for a get).
pub(super) fn peeked_from_wire(
    r: proto::PeekResponse,
    limit: usize,
) -> Result<Option<Fetched>, PeerFailure> {
    if !r.found {
        return Ok(None);
    }
    let (value, packed) = read_value(r.value, r.codec, limit)?;
    Ok(Some(Fetched {
        value,
        packed,
        version: r.version,
        expires_in: ttl_from_wire(r.expires_in_ms),
        hot: false,
    }))
}

impl From<(String, Fetched)> for proto::PushEntry {
    fn from((key, f): (String, Fetched)) -> Self {
        proto::PushEntry {
            key,
            value: f.value,
            version: f.version,
            expires_in_ms: expires_to_wire(f.expires_in),
            codec: proto::Codec::Identity as i32,
        }
    }
}

/// A pushed entry as received; one in a codec this node cannot read is refused.
pub(super) fn pushed_from_wire(e: proto::PushEntry) -> Result<(String, Fetched), Status> {
    check_codec(e.codec)?;
    let entry = Fetched {
        value: e.value,
        version: e.version,
        expires_in: ttl_from_wire(e.expires_in_ms),
        hot: false,
        packed: None,
    };
    Ok((e.key, entry))
}

impl From<Status> for PeerFailure {
    fn from(status: Status) -> PeerFailure {
        match crate::status::answered(&status) {
            Some(e) => PeerFailure::Answered(e),
            None => PeerFailure::Unreachable(format!("{:?}: {}", status.code(), status.message())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_on_the_wire() {
        assert_eq!(
            deadline_to_wire(Duration::from_micros(10)),
            1,
            "never 0: none"
        );
        assert_eq!(
            deadline_to_wire(Duration::from_secs(1)),
            900,
            "a tenth shorter"
        );
        assert_eq!(deadline_from_wire(0), DEFAULT_DEADLINE);
        assert_eq!(deadline_from_wire(u64::MAX), MAX_DEADLINE);
        assert_eq!(ttl_to_wire(None), 0);
        assert_eq!(ttl_to_wire(Some(Duration::from_nanos(1))), 1);
        assert_eq!(ttl_from_wire(0), None);
        assert_eq!(ttl_from_wire(1500), Some(Duration::from_millis(1500)));
        let f = Fetched {
            value: "v".into(),
            version: 9,
            expires_in: Some(Duration::from_micros(1)),
            hot: true,
            packed: None,
        };
        let back = fetched_from_wire(get_response((f, Codec::Identity)), 1 << 20).unwrap();
        assert_eq!(
            back.expires_in,
            Some(Duration::from_millis(1)),
            "live: at least 1 ms"
        );
        assert!(back.hot, "the owner's hot flag crosses the wire");
    }

    /// A peeked entry is read as a get's answer: decoded (and its frame kept) when it
    /// came compressed, refused when its frame is corrupt; "not found" is no entry.
    #[test]
    fn peeked_entries_are_decoded_and_bad_ones_refused() {
        let value = b"peeked value ".repeat(100);
        let lz4 = Codec::Lz4.encode(&value).unwrap();
        let answer = |value: Vec<u8>, codec: Codec| proto::PeekResponse {
            found: true,
            value: value.into(),
            version: 4,
            expires_in_ms: 0,
            codec: codec.wire() as i32,
        };
        let got = peeked_from_wire(answer(lz4.clone(), Codec::Lz4), 1 << 20).unwrap();
        let got = got.expect("found");
        assert_eq!((&got.value[..], got.version), (&value[..], 4));
        assert_eq!(
            got.packed.map(|(c, b)| (c, b.to_vec())),
            Some((Codec::Lz4, lz4))
        );
        let plain = peeked_from_wire(answer(value.clone(), Codec::Identity), 1 << 20);
        let plain = plain.unwrap().expect("found");
        assert_eq!((&plain.value[..], plain.packed), (&value[..], None));
        let corrupt = peeked_from_wire(answer(vec![0xff; 40], Codec::Lz4), 1 << 20);
        assert!(
            matches!(corrupt, Err(PeerFailure::Answered(_))),
            "{corrupt:?}"
        );
        let none = peeked_from_wire(proto::PeekResponse::default(), 1 << 20).unwrap();
        assert!(none.is_none());
    }

    #[test]
    fn compressed_values_are_decoded_and_bad_ones_refused_not_served_raw() {
        let answer = |value: Vec<u8>, codec: i32| proto::GetResponse {
            value: value.into(),
            version: 1,
            expires_in_ms: 0,
            codec,
            hot: false,
        };
        let raw = "abc".repeat(1000);
        for codec in Codec::ALL {
            let packed = codec
                .encode(raw.as_bytes())
                .unwrap_or_else(|| raw.clone().into_bytes());
            let wire = if codec == Codec::Identity {
                0
            } else {
                codec.wire() as i32
            };
            let back = fetched_from_wire(answer(packed, wire), 1 << 20).unwrap();
            assert_eq!(back.value, raw, "{codec}");
        }
        let refused = [
            answer(vec![0x04, 0x22, 0x4d, 0x18], proto::Codec::Lz4 as i32),
            answer(b"x".to_vec(), 99),
            // A bomb: 10 MiB of zeros past a 1 MiB limit.
            answer(
                Codec::Zstd { level: 3 }.encode(&vec![0; 10 << 20]).unwrap(),
                proto::Codec::Zstd as i32,
            ),
        ];
        for bad in refused {
            let refused = fetched_from_wire(bad, 1 << 20);
            assert!(
                matches!(refused, Err(PeerFailure::Answered(Error::Load(_)))),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn a_status_without_a_kind_is_the_transport() {
        let f = PeerFailure::from(Status::unavailable("connection refused"));
        assert!(matches!(f, PeerFailure::Unreachable(m) if m.contains("refused")));
    }
}
