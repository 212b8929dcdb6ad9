//! The one mapping between [`Error`] and `tonic::Status`, both ways, for every gRPC
//! protocol of the crate (peers and the registry).
//!
//! An answer of the other side's own (not found, a failed load, bad input) carries its
//! error kind in the `pc-error` metadata entry, so the caller gets back the very same
//! [`Error`]. A status without it came from the transport (refused, reset, timed out):
//! the other side was not reached.

use tonic::{Code, Status};

use crate::error::Error;

const KIND: &str = "pc-error";

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let (code, kind) = match &e {
            Error::EmptyKey => (Code::InvalidArgument, "empty-key".to_owned()),
            Error::KeyTooLong { len, max } => {
                (Code::InvalidArgument, format!("key-too-long:{len}:{max}"))
            }
            Error::ValueTooLarge { len, max } => (
                Code::InvalidArgument,
                format!("value-too-large:{len}:{max}"),
            ),
            Error::UnknownGroup(_) => (Code::NotFound, "unknown-group".to_owned()),
            Error::GroupExists(_) => (Code::AlreadyExists, "group-exists".to_owned()),
            Error::NotFound(_) => (Code::NotFound, "not-found".to_owned()),
            Error::Load(_) => (Code::Internal, "load".to_owned()),
            Error::Config(_) => (Code::InvalidArgument, "config".to_owned()),
            Error::Io(_) => (Code::Internal, "io".to_owned()),
            Error::Invalid(_) => (Code::InvalidArgument, "invalid".to_owned()),
            Error::Timeout => (Code::DeadlineExceeded, "timeout".to_owned()),
            Error::Unavailable(_) => (Code::Unavailable, "unavailable".to_owned()),
        };
        let mut status = Status::new(code, payload(&e));
        if let Ok(v) = kind.parse() {
            status.metadata_mut().insert(KIND, v);
        }
        status
    }
}

/// The message an error travels with: the inner text where the kind says the rest.
fn payload(e: &Error) -> String {
    match e {
        Error::UnknownGroup(s)
        | Error::GroupExists(s)
        | Error::NotFound(s)
        | Error::Load(s)
        | Error::Config(s)
        | Error::Io(s)
        | Error::Invalid(s)
        | Error::Unavailable(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The error the other side answered with, or `None` when the status came from the
/// transport.
pub(crate) fn answered(status: &Status) -> Option<Error> {
    let kind = status.metadata().get(KIND).and_then(|v| v.to_str().ok())?;
    let msg = status.message().to_owned();
    let mut parts = kind.split(':');
    let name = parts.next().unwrap_or_default();
    let mut num = || parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let e = match name {
        "empty-key" => Error::EmptyKey,
        "key-too-long" => Error::KeyTooLong {
            len: num(),
            max: num(),
        },
        "value-too-large" => Error::ValueTooLarge {
            len: num(),
            max: num(),
        },
        "unknown-group" => Error::UnknownGroup(msg),
        "group-exists" => Error::GroupExists(msg),
        "not-found" => Error::NotFound(msg),
        "config" => Error::Config(msg),
        "io" => Error::Io(msg),
        "invalid" => Error::Invalid(msg),
        "timeout" => Error::Timeout,
        "unavailable" => Error::Unavailable(msg),
        _ => Error::Load(msg),
    };
    Some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_survives_the_trip() {
        let all = [
            Error::EmptyKey,
            Error::KeyTooLong {
                len: 2000,
                max: 1024,
            },
            Error::ValueTooLarge { len: 9, max: 8 },
            Error::UnknownGroup("g".into()),
            Error::GroupExists("g".into()),
            Error::NotFound("no such user".into()),
            Error::Load("db down".into()),
            Error::Config("bad".into()),
            Error::Io("reset".into()),
            Error::Invalid("version".into()),
            Error::Timeout,
            Error::Unavailable("owner down".into()),
        ];
        for e in all {
            assert_eq!(answered(&Status::from(e.clone())), Some(e));
        }
    }

    #[test]
    fn a_status_without_a_kind_is_the_transport() {
        assert_eq!(answered(&Status::unavailable("connection refused")), None);
    }
}
