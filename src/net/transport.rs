//! All glue between the [`Net`] seam and the tonic and hyper stacks: the incoming stream
//! and `Connected` newtype a tonic server wants, the connector a tonic channel dials
//! through, and the accept loop both servers take connections from.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::{Channel, Endpoint};

use super::{Listener, Net};

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

/// The connections `listener` accepts, as the stream `serve_with_incoming` takes.
pub(crate) fn incoming<L: Listener>(
    listener: L,
) -> impl Stream<Item = io::Result<Conn<L::Stream>>> {
    futures::stream::unfold(listener, |listener| async move {
        let (stream, _) = accept_retrying(&listener).await;
        Some((Ok(Conn(stream)), listener))
    })
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

/// A lazily connected channel to `addr` that dials through `net` and reconnects after
/// failures. It sets no call timeout of its own: every call carries the caller's
/// deadline, which a channel-wide limit would silently cut short.
pub(crate) fn channel<N: Net>(
    net: N,
    addr: &str,
    t: ChannelTimeouts,
) -> crate::error::Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| crate::error::Error::Config(format!("peer address {addr:?}: {e}")))?
        .http2_keep_alive_interval(t.keep_alive)
        .keep_alive_timeout(t.keep_alive)
        .keep_alive_while_idle(true);
    let target = addr.to_owned();
    let connect = t.connect;
    let connector = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let (net, target) = (net.clone(), target.clone());
        async move {
            match crate::time::within(connect, net.connect(&target)).await {
                Ok(stream) => stream.map(TokioIo::new),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect to {target} timed out"),
                )),
            }
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}
