//! All glue between the [`Net`] seam and the tonic and hyper stacks: the incoming stream
//! and `Connected` newtype a tonic server wants, the connector a tonic channel dials
//! through, and the accept loop both servers take connections from. With [`Tls`], the
//! incoming stream yields connections whose handshake succeeded and the connector
//! shakes hands with the member it dials.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::{Channel, Endpoint};

use super::{Listener, Net};
use crate::tls::Tls;

/// A connection, TLS or plain.
pub(crate) type MaybeTls<S> = Either<S, tokio_rustls::TlsStream<S>>;

/// Most TLS handshakes an accept loop runs at once; connections beyond wait in the
/// listener's queue, so hostile clients cannot make it hold unbounded handshakes.
const MAX_HANDSHAKES: usize = 256;

/// Pause after a failed accept (out of descriptors, say) before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// A stream accepted by one of our listeners, made acceptable to tonic's server.
pub(crate) struct Conn<S>(S);

impl<S> tonic::transport::server::Connected for Conn<S> {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl<S: AsyncRead + Unpin> AsyncRead for Conn<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// Accepts forever; a failed accept is logged and retried, so one bad connection never
/// ends the server.
pub(crate) async fn accept_retrying<L: Listener>(listener: &L) -> (L::Stream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; retrying");
                crate::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Serves the client connections `listener` accepts until `stopped` completes, at most
/// `max` at once: one beyond is closed as soon as it is accepted, and `refused` is told
/// where it came from. Each other runs `serve(stream, place, draining)` as a task that
/// holds `place` (its slot) until it ends. On stop the listener closes, `draining` is
/// cancelled (each connection answers what it has read, then closes) and this waits for
/// the connections. Dropping the future drops every connection.
pub(crate) async fn serve_clients<L, F, Fut>(
    listener: L,
    max: usize,
    stopped: impl Future<Output = ()>,
    refused: impl Fn(SocketAddr),
    serve: F,
) where
    L: Listener,
    F: Fn(L::Stream, OwnedSemaphorePermit, CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let places = Arc::new(Semaphore::new(max));
    let connections = TaskTracker::new();
    let draining = CancellationToken::new();
    // Connections end with this future, however it ends.
    let dropped = CancellationToken::new();
    let _drop_all = dropped.clone().drop_guard();
    tokio::pin!(stopped);
    loop {
        let (stream, from) = tokio::select! {
            () = &mut stopped => break,
            accepted = accept_retrying(&listener) => accepted,
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            refused(from);
            continue;
        };
        let served = serve(stream, place, draining.clone());
        let dropped = dropped.clone();
        connections.spawn(async move {
            tokio::select! {
                () = served => {},
                () = dropped.cancelled() => {},
            }
        });
    }
    drop(listener);
    draining.cancel();
    connections.close();
    connections.wait().await;
}

/// The connections `listener` accepts, as the stream `serve_with_incoming` takes; with
/// `tls`, those whose handshake succeeded (handshakes run side by side, so a client
/// that stalls in one holds up no other).
pub(crate) fn incoming<L: Listener>(
    listener: L,
    tls: Option<Arc<Tls>>,
) -> impl Stream<Item = io::Result<Conn<MaybeTls<L::Stream>>>> {
    let Some(tls) = tls else {
        let plain = futures::stream::unfold(listener, |listener| async move {
            let (stream, _) = accept_retrying(&listener).await;
            Some((Ok(Conn(Either::Left(stream))), listener))
        });
        return futures::future::Either::Left(plain);
    };
    let (tx, rx) = mpsc::channel(16);
    let accepting = tokio::spawn(accept_tls(listener, tls, tx));
    // The accept loop ends with the stream: when the server stops and drops it.
    let guard = AbortOnDrop(accepting);
    let secured = futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        let conn = rx.recv().await?;
        Some((Ok(Conn(Either::Right(conn))), (rx, guard)))
    });
    futures::future::Either::Right(secured)
}

/// Accepts connections and shakes hands on each in a task of its own, sending those
/// that succeed to `tx`; ends when `tx`'s receiver is gone.
async fn accept_tls<L: Listener>(
    listener: L,
    tls: Arc<Tls>,
    tx: mpsc::Sender<tokio_rustls::TlsStream<L::Stream>>,
) {
    let places = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(place) = places.clone().acquire_owned().await else {
            return;
        };
        let (stream, from) = tokio::select! {
            accepted = accept_retrying(&listener) => accepted,
            () = tx.closed() => return,
        };
        let (tls, tx) = (tls.clone(), tx.clone());
        tokio::spawn(async move {
            let shook = tls.accept(stream).await;
            drop(place);
            match shook {
                Ok(conn) => {
                    let _ = tx.send(conn).await;
                }
                Err(e) => {
                    tracing::warn!(%from, error = %e, "refused a peer connection: TLS handshake failed")
                }
            }
        });
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Timeouts of a peer channel.
#[derive(Debug, Clone, Copy)]
pub struct ChannelTimeouts {
    /// Longest wait for a connection to be established.
    pub connect: Duration,
    /// HTTP/2 ping interval, so a connection whose segments vanish (a partition) is
    /// noticed and rebuilt instead of hanging.
    pub keep_alive: Duration,
}

impl Default for ChannelTimeouts {
    fn default() -> Self {
        ChannelTimeouts {
            connect: Duration::from_secs(1),
            keep_alive: Duration::from_secs(2),
        }
    }
}

/// A lazily connected channel to member `id` at `addr` that dials through `net` (and,
/// with `tls`, shakes hands with `id`) and reconnects after failures. It sets no call
/// timeout of its own: every call carries the caller's deadline, which a channel-wide
/// limit would silently cut short.
pub(crate) fn channel<N: Net>(
    net: N,
    id: &str,
    addr: &str,
    t: ChannelTimeouts,
    tls: Option<Arc<Tls>>,
) -> crate::error::Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| crate::error::Error::Config(format!("peer address {addr:?}: {e}")))?
        .http2_keep_alive_interval(t.keep_alive)
        .keep_alive_timeout(t.keep_alive)
        .keep_alive_while_idle(true);
    let (id, target) = (Arc::<str>::from(id), Arc::<str>::from(addr));
    let connect = t.connect;
    let connector = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let (net, id, target, tls) = (net.clone(), id.clone(), target.clone(), tls.clone());
        let addr = target.clone();
        // Connecting and the handshake together take at most `connect`.
        let dial = async move {
            let stream = net.connect(&target).await?;
            match tls {
                None => Ok(Either::Left(stream)),
                Some(tls) => tls.connect(&id, stream).await.map(Either::Right).map_err(|e| {
                    tracing::warn!(peer = %id, addr = %target, error = %e, "TLS handshake with a peer failed");
                    e
                }),
            }
        };
        async move {
            match crate::time::within(connect, dial).await {
                Ok(stream) => stream.map(TokioIo::new),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect to {addr} timed out"),
                )),
            }
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}
