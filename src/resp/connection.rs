//! One client connection: read what the client sent, run every complete command in
//! order, and write their replies together once the input runs dry (pipelining: a
//! batch of commands costs one write, not one each), or sooner when the replies grow
//! past [`FLUSH_AT`], so output stays bounded as input does.
//!
//! Input is bounded by [`Shared::max_buffer`]: a command larger than that, or bytes
//! that break the protocol, get `-ERR Protocol error: …` and the connection closes;
//! other connections never notice.

use std::sync::atomic::Ordering::Relaxed;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::commands::{self, Flow};
use super::frame::{Frame, ParseError};
use super::request;
use super::server::Shared;
use super::session::Session;

/// Replies are written out once they pass this many bytes, even mid-batch.
const FLUSH_AT: usize = 64 << 10;
/// Bytes read at a time, at most.
const READ_CHUNK: usize = 64 << 10;
/// The idle limit of a connection without one: a year.
const NEVER: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// Serves `stream` until the client leaves, breaks the protocol, idles past the
/// timeout, does not read its replies in time, or `draining` is cancelled (then what
/// was read is answered first).
pub(super) async fn serve<S>(mut stream: S, shared: &Shared, id: u64, draining: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut session = Session::new(id, shared.default_db);
    let mut input = BytesMut::with_capacity(4096);
    let mut output = BytesMut::with_capacity(4096);
    // One timer and one cancellation waiter for the whole connection, not one per read:
    // the idle timer is re-armed only when it fires after some activity.
    let idle_limit = shared.config.idle_timeout.unwrap_or(NEVER);
    let mut active = crate::time::now();
    let idle = crate::time::sleep(idle_limit);
    let cancelled = draining.cancelled();
    tokio::pin!(idle, cancelled);
    loop {
        let flow = run_buffered(shared, &mut session, &mut input, &mut output, &mut stream).await;
        let flow = match flow {
            Ok(flow) => flow,
            Err(Broken::Io) => return,
            Err(Broken::Protocol(why)) => {
                Frame::error(format!("ERR Protocol error: {why}"))
                    .encode(session.proto, &mut output);
                Flow::Close
            }
        };
        if flush(shared, &mut stream, &mut output).await.is_err() {
            return;
        }
        if flow == Flow::Close {
            return close(&mut stream).await;
        }
        if input.len() >= shared.max_buffer {
            let why = format!("a command of more than {} bytes", shared.max_buffer);
            Frame::error(format!("ERR Protocol error: {why}")).encode(session.proto, &mut output);
            let _ = flush(shared, &mut stream, &mut output).await;
            return close(&mut stream).await;
        }
        let room = (shared.max_buffer - input.len()).min(READ_CHUNK);
        input.reserve(room);
        let mut limited = (&mut stream).take(room as u64);
        let read = limited.read_buf(&mut input);
        tokio::select! {
            biased;
            read = read => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => active = crate::time::now(),
            },
            () = &mut cancelled => return,
            () = &mut idle => {
                if active.elapsed() >= idle_limit {
                    return;
                }
                idle.as_mut().reset(active + idle_limit);
            }
        }
    }
}

/// Most input read and dropped after the last reply, and the longest wait for it.
const LINGER_BYTES: u64 = 1 << 20;
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// Closes the connection cleanly: ends the output, then reads what the client still
/// sends (a bounded amount, for a bounded time) and drops it, so that the kernel does
/// not answer unread input with a reset that could destroy the last reply in flight.
async fn close<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    let _ = stream.shutdown().await;
    let mut rest = stream.take(LINGER_BYTES);
    let _ = crate::time::within(LINGER, tokio::io::copy(&mut rest, &mut tokio::io::sink())).await;
}

/// Why a connection cannot go on.
enum Broken {
    /// The client broke the protocol; the message says how.
    Protocol(String),
    /// Writing failed or timed out: the client is gone or does not read.
    Io,
}

/// Most commands parsed ahead of running them.
const BATCH: usize = 128;

/// Runs every complete command in `input`, replies into `output` (written out early
/// when it grows past [`FLUSH_AT`]). Commands run in order, but a run of consecutive
/// GETs runs at once ([`commands::gets`]).
async fn run_buffered<S>(
    shared: &Shared,
    session: &mut Session,
    input: &mut BytesMut,
    output: &mut BytesMut,
    stream: &mut S,
) -> Result<Flow, Broken>
where
    S: AsyncWrite + Unpin,
{
    loop {
        let mut batch = Vec::new();
        let mut broken = None;
        while batch.len() < BATCH {
            match request::parse(input, &shared.limits) {
                Ok((args, used)) => {
                    input.advance(used);
                    if !args.is_empty() {
                        batch.push(args);
                    }
                }
                Err(ParseError::Incomplete) => break,
                // The commands before it are answered first.
                Err(ParseError::Invalid(why)) => {
                    broken = Some(Broken::Protocol(why));
                    break;
                }
            }
        }
        if batch.is_empty() {
            return broken.map_or(Ok(Flow::Continue), Err);
        }
        shared
            .counts
            .commands
            .fetch_add(batch.len() as u64, Relaxed);
        let mut rest = &mut batch[..];
        while !rest.is_empty() {
            let reads = rest
                .iter()
                .take_while(|args| commands::is_get(args))
                .count();
            if reads > 1 {
                for reply in commands::gets(shared, session, &rest[..reads]).await {
                    reply.encode(session.proto, output);
                }
                rest = &mut rest[reads..];
            } else {
                let args = std::mem::take(&mut rest[0]);
                rest = &mut rest[1..];
                let (reply, flow) = commands::execute(shared, session, args).await;
                // A HELLO's reply is in the protocol it switched to.
                reply.encode(session.proto, output);
                if flow == Flow::Close {
                    return Ok(Flow::Close);
                }
            }
            if output.len() >= FLUSH_AT {
                flush(shared, stream, output)
                    .await
                    .map_err(|()| Broken::Io)?;
            }
        }
        if let Some(broken) = broken {
            return Err(broken);
        }
    }
}

/// Writes out `output` within the write timeout.
async fn flush<S: AsyncWrite + Unpin>(
    shared: &Shared,
    stream: &mut S,
    output: &mut BytesMut,
) -> Result<(), ()> {
    if output.is_empty() {
        return Ok(());
    }
    let written = crate::time::within(shared.config.write_timeout, stream.write_all(output)).await;
    output.clear();
    match written {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}
