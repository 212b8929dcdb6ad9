//! Talking the Redis protocol to the nodes from a simulated client, for swarms whose
//! clients speak RESP: one command per fresh connection (as http.rs does one
//! exchange), encoded and parsed with the node's own codec, and the reply turned into
//! the outcome an HTTP answer would have been, so the checkers judge both alike.

use bytes::{Bytes, BytesMut};
use peercache::resp::{Frame, Limits, ParseError, Proto};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::TcpStream;

use super::BoxError;
use super::node::RESP_PORT;
use crate::history::{Kind, Outcome};

/// Sends one command to `host` on a fresh simulated connection: the reply.
pub async fn call(host: &str, args: &[&[u8]]) -> Result<Frame, BoxError> {
    let mut stream = TcpStream::connect((host, RESP_PORT)).await?;
    let mut out = BytesMut::new();
    let words = args.iter().map(|a| Frame::Bulk(Bytes::copy_from_slice(a)));
    Frame::Array(words.collect()).encode(Proto::Resp2, &mut out);
    stream.write_all(&out).await?;
    let mut input = BytesMut::new();
    loop {
        match Frame::parse(&input, &Limits::default()) {
            Ok((frame, _)) => return Ok(frame),
            Err(ParseError::Incomplete) => {}
            Err(ParseError::Invalid(why)) => return Err(format!("bad reply: {why}").into()),
        }
        if stream.read_buf(&mut input).await? == 0 {
            return Err("connection closed before the reply".into());
        }
    }
}

/// The command for `kind` on `key` (a write's value in `body`).
pub fn command<'a>(kind: Kind, key: &'a str, body: &'a [u8]) -> Vec<&'a [u8]> {
    match kind {
        Kind::Get => vec![b"GET", key.as_bytes()],
        Kind::Set => vec![b"SET", key.as_bytes(), body],
        Kind::Remove => vec![b"DEL", key.as_bytes()],
    }
}

/// The reply as the HTTP API would have answered: a value or an acknowledgement is
/// `Ok`, nil is 404, and an error the status its HTTP twin has.
pub fn outcome(kind: Kind, reply: Frame) -> Outcome {
    match reply {
        Frame::Bulk(value) if kind == Kind::Get => Outcome::Ok(value),
        Frame::Null => Outcome::Status(404, "nil".into()),
        Frame::Error(msg) => {
            let status = match msg.split_once(' ').map_or("", |(_, rest)| rest) {
                _ if msg.starts_with("LOADING") => 503,
                m if m.starts_with("load failed") => 502,
                m if m.starts_with("peer unavailable") => 503,
                m if m.starts_with("deadline exceeded") => 504,
                m if m.starts_with("not found") => 404,
                _ => 500,
            };
            Outcome::Status(status, msg)
        }
        _ => Outcome::Ok(Bytes::new()),
    }
}
