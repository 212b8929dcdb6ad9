//! The RESP server through one real connection over an in-memory stream: either raw
//! bytes, or commands built from the input (known names, the loader's special keys,
//! SET's options), sent pipelined. Rules: no panic; every byte the server writes parses
//! as RESP frames; built commands get exactly one reply each, in order, up to a QUIT;
//! the connection ends once the client has sent everything.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use arbitrary::Arbitrary;
use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Key, block_on, decode, node};
use crate::auth::Tokens;
use crate::http::ClientAuth;
use crate::metrics::Metrics;
use crate::resp::server::{Setup, serve_one};
use crate::resp::{COMMANDS, Frame, Limits, Proto, RespConfig};

/// A token of the read role, given when the input asks for authentication.
const READ_TOKEN: &str = "fuzz-reader-0123456789";
/// A token of the write role.
const WRITE_TOKEN: &str = "fuzz-writer-0123456789";

#[derive(Debug, Arbitrary)]
struct Input {
    /// Clients must authenticate (the two tokens above).
    auth: bool,
    /// False: the node has not joined yet.
    ready: bool,
    sent: Sent,
}

#[derive(Debug, Arbitrary)]
enum Sent {
    Raw(Vec<u8>),
    Commands(Vec<Command>),
}

#[derive(Debug, Arbitrary)]
struct Command {
    /// An index into the known commands, or any name.
    name: Result<u8, String>,
    args: Vec<Arg>,
    /// Inline form (words on a line) instead of an array of bulks.
    inline: bool,
}

#[derive(Debug, Arbitrary)]
enum Arg {
    Key(Key),
    Word(Word),
    Number(i64),
    Bytes(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Word {
    Ex,
    Px,
    Nx,
    Get,
    Auth,
    Setname,
    ReadToken,
    WriteToken,
    Setinfo,
    Count,
    Docs,
}

impl Arg {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Arg::Key(key) => key.text().into_bytes(),
            Arg::Word(w) => match w {
                Word::Ex => "EX",
                Word::Px => "PX",
                Word::Nx => "NX",
                Word::Get => "GET",
                Word::Auth => "AUTH",
                Word::Setname => "SETNAME",
                Word::ReadToken => READ_TOKEN,
                Word::WriteToken => WRITE_TOKEN,
                Word::Setinfo => "SETINFO",
                Word::Count => "COUNT",
                Word::Docs => "DOCS",
            }
            .as_bytes()
            .to_vec(),
            Arg::Number(n) => n.to_string().into_bytes(),
            Arg::Bytes(b) => b.clone(),
        }
    }
}

impl Command {
    /// The command's wire form; None for an inline one whose words a line cannot
    /// carry (spaces, line ends, or none at all).
    fn encode(&self) -> Option<Bytes> {
        let name = match &self.name {
            Ok(i) => COMMANDS[usize::from(*i) % COMMANDS.len()]
                .name
                .as_bytes()
                .to_vec(),
            Err(other) => other.clone().into_bytes(),
        };
        let words: Vec<Vec<u8>> = std::iter::once(name)
            .chain(self.args.iter().map(Arg::bytes))
            .collect();
        if !self.inline {
            let mut out = BytesMut::new();
            let frame = Frame::Array(words.into_iter().map(|w| Frame::Bulk(w.into())).collect());
            frame.encode(Proto::Resp2, &mut out);
            return Some(out.freeze());
        }
        let plain = |w: &Vec<u8>| !w.is_empty() && !w.iter().any(|b| b" \t\r\n".contains(b));
        // A line starting with '*' would be read as an array.
        if !words.iter().all(plain) || words[0][0] == b'*' {
            return None;
        }
        let mut line = words.join(&b' ');
        line.extend_from_slice(b"\r\n");
        Some(line.into())
    }

    fn quits(&self) -> bool {
        matches!(&self.name, Ok(i) if COMMANDS[usize::from(*i) % COMMANDS.len()].name == "quit")
    }
}

/// Sends the input to a fresh node's RESP connection and checks what comes back.
pub fn resp(data: &[u8]) {
    let Some(input) = decode::<Input>(data) else {
        return;
    };
    let (bytes, expected) = match &input.sent {
        Sent::Raw(bytes) => (Bytes::copy_from_slice(bytes), None),
        Sent::Commands(commands) => {
            let mut out = BytesMut::new();
            let mut replies = 0;
            for c in commands {
                let Some(wire) = c.encode() else { continue };
                out.extend_from_slice(&wire);
                replies += 1;
                if c.quits() {
                    break;
                }
            }
            (out.freeze(), Some(replies))
        }
    };
    let (groups, picker) = node();
    let auth = input.auth.then(|| ClientAuth {
        tokens: Arc::new(ArcSwap::from_pointee(
            Tokens::parse(&format!("read {READ_TOKEN}\nwrite {WRITE_TOKEN}\n"))
                .expect("valid tokens"),
        )),
        protect_metrics: false,
    });
    let setup = Setup {
        groups: groups.clone(),
        config: RespConfig {
            groups: vec!["g".into(), "h".into()],
            ..RespConfig::default()
        },
        auth,
        ready: Arc::new(AtomicBool::new(input.ready)),
        picker,
        metrics: Arc::new(Metrics::new(groups)),
        tls: None,
    };
    let replies = block_on(async move {
        let (client, server) = tokio::io::duplex(64 << 10);
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let send = async move {
            // The server may close first (QUIT, a protocol error): then writes fail.
            let _ = to_server.write_all(&bytes).await;
            let _ = to_server.shutdown().await;
        };
        let receive = async move {
            let mut replies = Vec::new();
            from_server
                .read_to_end(&mut replies)
                .await
                .expect("an in-memory read");
            replies
        };
        let (served, (), replies) = tokio::join!(serve_one(server, setup), send, receive);
        served.expect("the RESP server starts");
        replies
    });
    let frames = parse_all(&replies);
    if let Some(expected) = expected {
        assert_eq!(frames, expected, "one reply per command: {replies:?}");
    }
}

/// How many frames `bytes` holds; panics unless it is a sequence of whole frames.
fn parse_all(mut bytes: &[u8]) -> usize {
    let limits = Limits::default();
    let mut n = 0;
    while !bytes.is_empty() {
        let (_, used) = Frame::parse(bytes, &limits)
            .unwrap_or_else(|e| panic!("the server wrote a bad frame ({e:?}): {bytes:?}"));
        bytes = &bytes[used..];
        n += 1;
    }
    n
}
