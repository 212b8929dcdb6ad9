//! The node's two servers, gRPC for peers and HTTP for clients, run as tasks that stop
//! together: stopping refuses new connections and lets requests in flight finish.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};

use crate::error::{Error, Result};
use crate::group::Registry;
use crate::grpc::{self, PeerService};
use crate::metrics::Metrics;
use crate::net::Listener;
use crate::net::transport;
use crate::peer::PeerPicker;

/// The running servers.
pub(super) struct Servers {
    tasks: JoinSet<Result<()>>,
    stop: watch::Sender<bool>,
}

impl Servers {
    /// Starts serving `groups` to peers on `grpc` and, with `http`, to clients.
    pub(super) fn start<L: Listener>(
        grpc: L,
        http: Option<L>,
        groups: &Registry,
        picker: &Arc<PeerPicker>,
        metrics: &Arc<Metrics>,
        ready: &Arc<AtomicBool>,
    ) -> Self {
        let (stop, _) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let service = grpc::server(PeerService::new(groups.clone()));
        let stopped = until_stopped(&stop);
        tasks.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(transport::incoming(grpc), stopped)
                .await
                .map_err(|e| Error::Io(format!("gRPC server: {e}")))
        });
        if let Some(http) = http {
            let app = crate::http::router(crate::http::State {
                groups: groups.clone(),
                picker: picker.clone(),
                metrics: metrics.clone(),
                ready: ready.clone(),
            });
            let stopped = until_stopped(&stop);
            tasks.spawn(async move {
                axum::serve(transport::AxumListener(http), app)
                    .with_graceful_shutdown(stopped)
                    .await
                    .map_err(|e| Error::Io(format!("HTTP server: {e}")))
            });
        }
        Servers { tasks, stop }
    }

    /// Completes when a server ends on its own (they end only when stopped, so this is
    /// a failure), with what it ended with; never completes otherwise.
    pub(super) async fn ended(&mut self) -> Result<()> {
        match self.tasks.join_next().await {
            Some(ended) => outcome(ended),
            None => std::future::pending().await,
        }
    }

    /// Stops accepting and waits for the requests in flight; the first failure.
    pub(super) async fn drain(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        let mut result = Ok(());
        while let Some(ended) = self.tasks.join_next().await {
            result = result.and(outcome(ended));
        }
        result
    }
}

impl Drop for Servers {
    /// Servers not drained (a server failed and `run` returns at once) stop here.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A server task's result, a panic or abort counted as an i/o failure.
fn outcome(ended: std::result::Result<Result<()>, JoinError>) -> Result<()> {
    ended.unwrap_or_else(|e| Err(Error::Io(format!("server task: {e}"))))
}

/// Completes once `stop` says so.
fn until_stopped(stop: &watch::Sender<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = stop.subscribe();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}
