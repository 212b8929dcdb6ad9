//! `peercache serve`'s RESP flags: where Redis clients connect, which group plain keys
//! go to, and the server's limits. (A module of the binary, not of the library.)

use std::time::Duration;

use clap::Args;
use peercache::resp::RespConfig;

/// The Redis-protocol server.
#[derive(Args, Clone)]
pub struct RespArgs {
    /// Address of the Redis-protocol (RESP2/RESP3) server, HOST:PORT; off without it.
    /// Database n (`SELECT n`) is the n-th --group, in the order given.
    #[arg(long, env = "PEERCACHE_RESP_ADDR")]
    pub resp_addr: Option<String>,
    /// The group a Redis connection starts on, before any SELECT (default: the first
    /// --group).
    #[arg(long, env = "PEERCACHE_RESP_GROUP", requires = "resp_addr")]
    resp_group: Option<String>,
    /// Most Redis client connections open at once; one beyond is closed when accepted.
    #[arg(long, env = "PEERCACHE_RESP_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    resp_max_connections: u32,
    /// A Redis connection that sends nothing for this long is closed (0: never, as
    /// Redis's default).
    #[arg(long, env = "PEERCACHE_RESP_IDLE_TIMEOUT", default_value = "300s", value_parser = humantime::parse_duration)]
    resp_idle_timeout: Duration,
    /// Longest a reply may wait for a Redis client to read any of it; then the
    /// connection is closed.
    #[arg(long, env = "PEERCACHE_RESP_WRITE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    resp_write_timeout: Duration,
}

impl RespArgs {
    /// The server's configuration, its databases being `groups` in order.
    pub fn config(&self, groups: Vec<String>) -> anyhow::Result<RespConfig> {
        if let Some(name) = &self.resp_group
            && !groups.contains(name)
        {
            anyhow::bail!(
                "--resp-group {name:?} is not one of the --group flags ({})",
                groups.join(",")
            );
        }
        Ok(RespConfig {
            groups,
            default_group: self.resp_group.clone(),
            max_connections: self.resp_max_connections as usize,
            idle_timeout: (!self.resp_idle_timeout.is_zero()).then_some(self.resp_idle_timeout),
            write_timeout: self.resp_write_timeout,
            ..RespConfig::default()
        })
    }
}
