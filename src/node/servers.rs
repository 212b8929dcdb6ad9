//! The node's servers, gRPC for peers, HTTP and RESP for clients, run as tasks that stop
//! together: stopping refuses new connections and lets requests in flight finish within
//! a grace period, after which their connections are dropped.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};

use super::NodeConfig;
use crate::error::{Error, Result};
use crate::group::Registry;
use crate::grpc::{self, PeerService};

use crate::metrics::Metrics;
use crate::net::Listener;
use crate::net::transport;
use crate::peer::PeerPicker;

/// What the servers listen on: gRPC always, HTTP and RESP when given.
pub(super) struct Listeners<L> {
    pub grpc: L,
    pub http: Option<L>,
    pub resp: Option<L>,
}

/// The running servers.
pub(super) struct Servers {
    tasks: JoinSet<Result<()>>,
    stop: watch::Sender<bool>,
}

impl Servers {
    /// Starts serving `groups` to peers on `grpc` and, with `http` and `resp`, to clients.
    pub(super) fn start<L: Listener>(
        listeners: Listeners<L>,
        config: &NodeConfig,
        groups: &Registry,
        picker: &Arc<PeerPicker>,
        metrics: &Arc<Metrics>,
        ready: &Arc<AtomicBool>,
    ) -> Self {
        let Listeners { grpc, http, resp } = listeners;
        let (stop, _) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let service =
            grpc::server(PeerService::new(groups.clone()).ending_streams_on(stop.subscribe()));
        let stopped = until_stopped(&stop);
        let peer_tls = config.peer_tls.clone();
        tasks.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(transport::incoming(grpc, peer_tls), stopped)
                .await
                .map_err(|e| Error::Io(format!("gRPC server: {e}")))
        });
        if let Some(http) = http {
            let app = crate::http::router(crate::http::State {
                groups: groups.clone(),
                picker: picker.clone(),
                metrics: metrics.clone(),
                ready: ready.clone(),
                auth: config.auth.clone(),
            });
            let served = crate::http::server::serve(
                http,
                app,
                config.http,
                config.http_tls.clone(),
                metrics.clone(),
                until_stopped(&stop),
            );
            tasks.spawn(served);
        }
        if let Some(resp) = resp {
            let setup = crate::resp::server::Setup {
                groups: groups.clone(),
                config: config.resp.clone(),
                auth: config.auth.clone(),
                ready: ready.clone(),
                picker: picker.clone(),
                metrics: metrics.clone(),
                tls: config.http_tls.clone(),
            };
            tasks.spawn(crate::resp::server::serve(
                resp,
                setup,
                until_stopped(&stop),
            ));
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

    /// Stops accepting and waits up to `grace` for the requests in flight, then drops
    /// the connections still open; the first failure of a server that ended in time.
    pub(super) async fn drain(mut self, grace: Duration) -> Result<()> {
        let _ = self.stop.send(true);
        let tasks = &mut self.tasks;
        let ended = crate::time::within(grace, async move {
            let mut result = Ok(());
            while let Some(ended) = tasks.join_next().await {
                result = result.and(outcome(ended));
            }
            result
        })
        .await;
        ended.unwrap_or_else(|_| {
            tracing::warn!(
                ?grace,
                "requests still in flight after the shutdown grace; dropping their connections"
            );
            self.tasks.abort_all();
            Ok(())
        })
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
