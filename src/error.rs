//! The crate's error type: one enum for everything a caller can handle.

/// Errors returned by peercache.
///
/// `Clone` because one load's outcome is shared by every caller of a singleflight.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The key is empty.
    #[error("empty key")]
    EmptyKey,
    /// The key is longer than the group allows.
    #[error("key is {len} bytes, the limit is {max}")]
    KeyTooLong {
        /// Length of the rejected key.
        len: usize,
        /// The group's limit.
        max: usize,
    },
    /// The value is larger than the group allows.
    #[error("value is {len} bytes, the limit is {max}")]
    ValueTooLarge {
        /// Length of the rejected value.
        len: usize,
        /// The group's limit.
        max: usize,
    },
    /// No group of that name is registered.
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
    /// A group of that name is already registered.
    #[error("group {0:?} already exists")]
    GroupExists(String),
    /// The source has no value for the key.
    #[error("not found: {0}")]
    NotFound(String),
    /// The source failed; the message is the loader's own.
    #[error("load failed: {0}")]
    Load(String),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The request's deadline passed before it completed.
    #[error("deadline exceeded")]
    Timeout,
    /// A request is malformed beyond the cases above.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A listener or server failed.
    #[error("i/o: {0}")]
    Io(String),
    /// The key's owner could not be reached (for writes, which only the owner may apply).
    #[error("peer unavailable: {0}")]
    Unavailable(String),
}

impl Error {
    /// A loader failure carrying `msg`.
    pub fn load(msg: impl std::fmt::Display) -> Self {
        Error::Load(msg.to_string())
    }
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
