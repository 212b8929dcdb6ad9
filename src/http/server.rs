//! The HTTP API's server: hyper HTTP/1 connections over a [`Listener`], with the limits
//! a port open to clients needs, so that slow, idle or numerous clients cannot hold its
//! connections, memory or file descriptors (which the peers' gRPC port shares).
//!
//! - At most [`HttpLimits::max_connections`] connections; one beyond is closed at once.
//! - A request's headers must arrive within [`HttpLimits::header_timeout`], counted
//!   from when the connection starts waiting for one (hyper's header read timeout), so
//!   idle keep-alive connections close after it too.
//! - Its body within [`HttpLimits::body_timeout`] ([`TimedBody`]).
//! - A response write may wait at most [`HttpLimits::write_timeout`] for the client to
//!   read ([`WriteStall`]).
//! - On stop the listener is closed, idle connections close, busy ones finish their
//!   request; whoever runs the server bounds that wait and drops the future, which
//!   drops every connection still open.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::body::TimedBody;
use super::write_stall::WriteStall;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::net::Listener;
use crate::net::transport::serve_clients;
use crate::tls::Tls;

/// Limits of the HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Longest a client may take to send a request's headers, counted from when the
    /// connection starts waiting for a request: when it opens, and after each response.
    /// It is therefore also the idle timeout of keep-alive connections.
    pub header_timeout: Duration,
    /// Longest a request's body may take to arrive, counted from its headers; then the
    /// answer is 408.
    pub body_timeout: Duration,
    /// Longest a response may wait for the client to read any of it; then the
    /// connection is closed.
    pub write_timeout: Duration,
    /// Most client connections open at once; a connection beyond it is closed as soon
    /// as it is accepted.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

/// Serves `app` on `listener` until `stopped` completes, then closes the listener and
/// waits for the requests in flight. Dropping the future drops every connection.
pub(crate) async fn serve<L: Listener>(
    listener: L,
    app: Router,
    limits: HttpLimits,
    tls: Option<Arc<Tls>>,
    metrics: Arc<Metrics>,
    stopped: impl Future<Output = ()>,
) -> Result<()> {
    let refused = |from| {
        metrics.http_connection_refused();
        tracing::debug!(%from, limit = limits.max_connections, "HTTP connection limit reached; closing a new connection");
    };
    let serve = |stream, place, draining| {
        let open = Open::new(place, metrics.clone());
        secured(stream, tls.clone(), app.clone(), limits, draining, open)
    };
    serve_clients(listener, limits.max_connections, stopped, refused, serve).await;
    Ok(())
}

/// Serves one connection, after its TLS handshake when `tls` is set (a failed one
/// closes it).
async fn secured<S>(
    stream: S,
    tls: Option<Arc<Tls>>,
    app: Router,
    limits: HttpLimits,
    draining: CancellationToken,
    open: Open,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    match Tls::accept_if(tls.as_deref(), stream).await {
        Ok(stream) => connection(stream, app, limits, draining, open).await,
        Err(e) => tracing::debug!(error = %e, "HTTPS handshake failed"),
    }
}

/// Serves one connection until it closes, or, once `draining` is cancelled, until its
/// request in flight is answered.
async fn connection<S>(
    stream: S,
    app: Router,
    limits: HttpLimits,
    draining: CancellationToken,
    _open: Open,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let body_timeout = limits.body_timeout;
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let req = req.map(|body| TimedBody::new(body, body_timeout));
        app.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .serve_connection(
            TokioIo::new(WriteStall::new(stream, limits.write_timeout)),
            service,
        );
    tokio::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        () = draining.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "HTTP connection ended");
    }
}

/// A connection's place under the limit, counted in the metrics while it is open.
struct Open {
    _place: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Open {
    fn new(place: OwnedSemaphorePermit, metrics: Arc<Metrics>) -> Self {
        metrics.http_connection_opened();
        Open {
            _place: place,
            metrics,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.metrics.http_connection_closed();
    }
}
