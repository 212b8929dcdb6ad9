//! The Redis protocol (RESP2 and RESP3) in front of the node's groups, so stock Redis
//! clients, redis-cli and redis-benchmark work against peercache.
//!
//! Keys map to groups the way Redis maps them to databases: database `n` (`SELECT n`)
//! is the `n`-th group of [`RespConfig::groups`], and a connection starts on
//! [`RespConfig::default_group`]. `GET` reads through the group like the HTTP API does;
//! `SET`/`DEL` write through the key's owner. The commands are in commands.rs (keys)
//! and connection.rs's neighbours admin.rs and info.rs (the connection and the node).
//!
//! Layout: frame.rs (values and their wire form), request.rs (a command's words,
//! inline or array), server.rs (accept loop, limits, drain), connection.rs (one
//! client: read, run, batch replies), session.rs (a connection's state and its
//! authentication), commands.rs (the table and the key commands), admin.rs and info.rs.

use std::time::Duration;

mod admin;
mod commands;
mod connection;
pub mod frame;
mod info;
pub mod request;
pub(crate) mod server;
mod session;

pub use commands::COMMANDS;
pub use frame::{Frame, Limits, ParseError, Proto};

/// How the RESP server maps keys and bounds its clients.
#[derive(Debug, Clone)]
pub struct RespConfig {
    /// Groups in database order: `SELECT n` picks the `n`-th. Empty: every group of the
    /// node, ordered by name.
    pub groups: Vec<String>,
    /// The group a connection starts on (default: the first of [`Self::groups`]).
    pub default_group: Option<String>,
    /// Most client connections open at once; one beyond is closed when accepted.
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed (None: never).
    pub idle_timeout: Option<Duration>,
    /// Longest a reply may wait for the client to read any of it; then the connection
    /// is closed.
    pub write_timeout: Duration,
    /// Most arguments of one command.
    pub max_args: usize,
    /// Longest inline command (and simple-string line).
    pub max_inline: usize,
}

impl Default for RespConfig {
    fn default() -> Self {
        RespConfig {
            groups: Vec::new(),
            default_group: None,
            max_connections: 1024,
            idle_timeout: Some(Duration::from_secs(300)),
            write_timeout: Duration::from_secs(30),
            max_args: 1 << 16,
            max_inline: 64 << 10,
        }
    }
}
