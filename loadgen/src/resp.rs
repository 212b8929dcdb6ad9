//! `--protocol resp`: a small Redis-protocol client over plain TCP, with commands
//! encoded and replies parsed by peercache's own RESP codec. Each request in flight
//! holds one connection; idle ones wait per target (pool.rs), so a closed loop of N
//! workers settles on N connections, as redis-benchmark's `-c N` does.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use parking_lot::Mutex;
use peercache::resp::{Frame, Limits, ParseError, Proto};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::Failure;
use crate::pool::{Idle, within};

/// Connections to each target, the database of the run's group on each.
#[derive(Clone)]
pub struct RespClient {
    targets: Arc<Vec<Target>>,
    timeout: Duration,
}

struct Target {
    addr: String,
    group: String,
    /// `SELECT` index of the group on this node, once a connection has asked INFO.
    db: Mutex<Option<usize>>,
    idle: Idle<Conn>,
}

impl RespClient {
    /// A client of `addrs` (`host:port`) for `group`; each request ends after `timeout`.
    pub fn new(addrs: &[String], group: &str, timeout: Duration) -> RespClient {
        let targets = addrs
            .iter()
            .map(|addr| Target {
                addr: addr.clone(),
                group: group.to_owned(),
                db: Mutex::new(None),
                idle: Idle::default(),
            })
            .collect();
        RespClient {
            targets: Arc::new(targets),
            timeout,
        }
    }

    /// Sends one command to target `to`: the reply, or the failure's kind.
    pub async fn call(&self, to: usize, args: &[&[u8]]) -> Result<Frame, Failure> {
        let target = &self.targets[to];
        within(self.timeout, async {
            let mut conn = match target.idle.take(|_| true) {
                Some(conn) => conn,
                None => target.connect().await?,
            };
            let reply = conn.call(args).await?;
            target.idle.put(conn);
            Ok(reply)
        })
        .await
    }
}

impl Target {
    /// A new connection on the group's database (found once through INFO keyspace,
    /// whose `dbN` lines name their group).
    async fn connect(&self) -> Result<Conn, Failure> {
        let stream = TcpStream::connect(&self.addr)
            .await
            .map_err(|_| "connect")?;
        stream.set_nodelay(true).map_err(|_| "connect")?;
        let mut conn = Conn {
            stream,
            input: BytesMut::with_capacity(4096),
        };
        let known = *self.db.lock();
        let db = match known {
            Some(db) => db,
            None => {
                let db = match conn.call(&[b"INFO", b"keyspace"]).await? {
                    Frame::Bulk(text) => db_of(&text, &self.group)?,
                    other => return Err(format!("resp INFO: {other:?}")),
                };
                *self.db.lock() = Some(db);
                db
            }
        };
        if db != 0 {
            let n = db.to_string();
            conn.call(&[b"SELECT", n.as_bytes()]).await?;
        }
        Ok(conn)
    }
}

/// The database of `group` in INFO's keyspace text (`db1:keys=10,group=users`).
fn db_of(text: &[u8], group: &str) -> Result<usize, Failure> {
    let text = String::from_utf8_lossy(text);
    text.lines()
        .filter_map(|line| {
            let (db, fields) = line.strip_prefix("db")?.split_once(':')?;
            fields
                .split(',')
                .any(|f| f == format!("group={group}"))
                .then(|| db.parse().ok())?
        })
        .next()
        .ok_or_else(|| format!("resp: the node serves no group {group:?}"))
}

struct Conn {
    stream: TcpStream,
    input: BytesMut,
}

impl Conn {
    async fn call(&mut self, args: &[&[u8]]) -> Result<Frame, Failure> {
        let command = Frame::Array(
            args.iter()
                .map(|a| Frame::Bulk(Bytes::copy_from_slice(a)))
                .collect(),
        );
        let mut out = BytesMut::new();
        command.encode(Proto::Resp2, &mut out);
        self.stream.write_all(&out).await.map_err(|_| "io")?;
        let limits = Limits::default();
        loop {
            match Frame::parse(&self.input, &limits) {
                Ok((Frame::Error(e), used)) => {
                    self.input.advance(used);
                    let code = e.split(' ').next().unwrap_or("ERR").to_lowercase();
                    return Err(format!("resp {code}"));
                }
                Ok((frame, used)) => {
                    self.input.advance(used);
                    return Ok(frame);
                }
                Err(ParseError::Incomplete) => {}
                Err(ParseError::Invalid(_)) => return Err("resp protocol".into()),
            }
            if self.input.len() > 64 << 20 {
                return Err("resp reply too large".into());
            }
            self.input.reserve(64 << 10);
            match self.stream.read_buf(&mut self.input).await {
                Ok(0) | Err(_) => return Err("io".into()),
                Ok(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_groups_database_is_read_from_info() {
        let info = b"# Keyspace\r\ndb0:keys=3,group=demo\r\ndb1:keys=0,group=users\r\n";
        assert_eq!(super::db_of(info, "users"), Ok(1));
        assert_eq!(super::db_of(info, "demo"), Ok(0));
        assert!(super::db_of(info, "user").is_err());
    }
}
