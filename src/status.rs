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
        let (kind, message) = parts(&e);
        let mut status = Status::new(code(&e), message);
        if let Ok(v) = kind.parse() {
            status.metadata_mut().insert(KIND, v);
        }
        status
    }
}

/// The gRPC code of an error.
fn code(e: &Error) -> Code {
    match e {
        Error::EmptyKey
        | Error::KeyTooLong { .. }
        | Error::ValueTooLarge { .. }
        | Error::Config(_)
        | Error::Invalid(_) => Code::InvalidArgument,
        Error::UnknownGroup(_) | Error::NotFound(_) => Code::NotFound,
        Error::GroupExists(_) => Code::AlreadyExists,
        Error::Load(_) | Error::Io(_) => Code::Internal,
        Error::Timeout => Code::DeadlineExceeded,
        Error::Unavailable(_) => Code::Unavailable,
    }
}

/// An error as its kind (the `pc-error` entry) and message: what travels for it in a
/// status, or in one key's answer of a GetMany. [`from_parts`] takes it back.
pub(crate) fn parts(e: &Error) -> (String, String) {
    let kind = match e {
        Error::EmptyKey => "empty-key".to_owned(),
        Error::KeyTooLong { len, max } => format!("key-too-long:{len}:{max}"),
        Error::ValueTooLarge { len, max } => format!("value-too-large:{len}:{max}"),
        Error::UnknownGroup(_) => "unknown-group".to_owned(),
        Error::GroupExists(_) => "group-exists".to_owned(),
        Error::NotFound(_) => "not-found".to_owned(),
        Error::Load(_) => "load".to_owned(),
        Error::Config(_) => "config".to_owned(),
        Error::Io(_) => "io".to_owned(),
        Error::Invalid(_) => "invalid".to_owned(),
        Error::Timeout => "timeout".to_owned(),
        Error::Unavailable(_) => "unavailable".to_owned(),
    };
    (kind, payload(e))
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
    Some(from_parts(kind, status.message().to_owned()))
}

/// The error of `kind` with `msg` (see [`parts`]); an unknown kind is a failed load.
pub(crate) fn from_parts(kind: &str, msg: String) -> Error {
    let mut parts = kind.split(':');
    let name = parts.next().unwrap_or_default();
    let mut num = || parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    match name {
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
    }
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
            assert_eq!(answered(&Status::from(e.clone())), Some(e.clone()));
            let (kind, msg) = parts(&e);
            assert_eq!(
                from_parts(&kind, msg),
                e,
                "as one key's answer of a GetMany"
            );
        }
    }

    #[test]
    fn a_status_without_a_kind_is_the_transport() {
        assert_eq!(answered(&Status::unavailable("connection refused")), None);
    }
}
