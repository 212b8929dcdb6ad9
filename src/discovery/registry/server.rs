//! The registry's gRPC service: thin handlers over the [`Store`], a task that expires
//! leases on time, and watch streams fed from the store's history and a broadcast of
//! new events.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::time;
use futures::Stream;
use parking_lot::Mutex;
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinSet;
use tonic::{Request, Response, Status};

use super::store::{Compacted, Store};
use super::{RegistryConfig, millis};
use crate::discovery::WatchEvent;
use crate::error::{Error, Result};
use crate::net::Listener;
use crate::net::transport;
use crate::proto::{self, registry_server};

/// Longest sleep of the expiry task; it also wakes at the next lease deadline.
const EXPIRY_TICK: Duration = Duration::from_millis(100);
/// Batches of events buffered per watcher before it lags and catches up from history.
const WATCH_BUFFER: usize = 1024;

/// Serves a registry on `listener` until `shutdown` completes; then open watches end,
/// calls in flight finish, and the state is dropped.
pub async fn serve_registry<L: Listener>(
    listener: L,
    config: RegistryConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let (close, closing) = watch::channel(false);
    let service = Service::new(&config, closing);
    // Stops with this function, however it ends.
    let mut background = JoinSet::new();
    background.spawn(expire_leases(service.shared.clone()));
    let shutdown = async move {
        shutdown.await;
        let _ = close.send(true);
    };
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(config.keep_alive))
        .http2_keepalive_timeout(Some(config.keep_alive))
        .add_service(registry_server::RegistryServer::new(service))
        .serve_with_incoming_shutdown(transport::incoming(listener, None), shutdown)
        .await
        .map_err(|e| Error::Io(format!("registry server: {e}")))
}

/// The changes of one call, in revision order.
type Batch = Arc<Vec<WatchEvent>>;

/// A watch's start: a receiver of changes after `current`, and what to replay first.
struct Subscription {
    rx: broadcast::Receiver<Batch>,
    replay: Vec<WatchEvent>,
    current: i64,
}

/// What the handlers, the expiry task and the watch streams share.
struct Shared {
    store: Mutex<Store>,
    /// Every change, in batches in revision order; sent under the store lock.
    events: broadcast::Sender<Batch>,
    /// A lease was granted: its deadline may be the earliest.
    granted: Notify,
    closing: watch::Receiver<bool>,
}

impl Shared {
    /// Runs `f` on the store after expiring overdue leases, then broadcasts the changes.
    fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let mut store = self.store.lock();
        store.expire(time::now());
        let out = f(&mut store);
        let events = store.take_events();
        if !events.is_empty() {
            // No receivers is fine: nobody watches.
            let _ = self.events.send(Arc::new(events));
        }
        out
    }

    /// Starts a watch of `prefix` from revision `from` (0: the next write).
    fn subscribe(&self, prefix: &str, from: i64) -> Result<Subscription, Compacted> {
        self.with_store(|store| {
            let current = store.revision();
            let from = if from > 0 { from } else { current + 1 };
            let replay = store.since(from)?;
            let replay = (replay.into_iter())
                .filter(|e| e.key().starts_with(prefix))
                .collect();
            Ok(Subscription {
                rx: self.events.subscribe(),
                replay,
                current,
            })
        })
    }
}

/// Deletes the keys of expired leases on time, so watchers hear of it.
async fn expire_leases(shared: Arc<Shared>) {
    loop {
        let granted = shared.granted.notified();
        let next = shared.with_store(|s| s.next_deadline());
        let tick = time::now() + EXPIRY_TICK;
        let wake = next.map_or(tick, |d| d.min(tick));
        tokio::select! {
            () = time::sleep_until(wake) => {}
            () = granted => {}
        }
    }
}

fn compacted(c: Compacted) -> Status {
    Status::failed_precondition(format!(
        "compacted: watch from revision {} or later",
        c.first
    ))
}

struct Service {
    shared: Arc<Shared>,
}

impl Service {
    /// A fresh registry's handlers; its watches end when `closing` turns true.
    fn new(config: &RegistryConfig, closing: watch::Receiver<bool>) -> Self {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(config.first_lease, config.history)),
            events: broadcast::Sender::new(WATCH_BUFFER),
            granted: Notify::new(),
            closing,
        });
        Service { shared }
    }
}

/// A fresh registry's gRPC handlers without a server or expiry task (every call expires
/// the overdue leases first), for the fuzz target; its watches end when the returned
/// sender sends `true` or is dropped.
#[cfg(feature = "fuzzing")]
pub(crate) fn handlers(
    config: &RegistryConfig,
) -> (impl registry_server::Registry, watch::Sender<bool>) {
    let (close, closing) = watch::channel(false);
    (Service::new(config, closing), close)
}

type WatchResponses = Pin<Box<dyn Stream<Item = Result<proto::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl registry_server::Registry for Service {
    async fn grant(
        &self,
        req: Request<proto::GrantRequest>,
    ) -> Result<Response<proto::GrantResponse>, Status> {
        let ttl = Duration::from_millis(req.into_inner().ttl_ms);
        let lease = self.shared.with_store(|s| s.grant(ttl, time::now()))?;
        self.shared.granted.notify_one();
        Ok(Response::new(proto::GrantResponse {
            lease: lease.id,
            ttl_ms: millis(lease.ttl),
        }))
    }

    async fn keep_alive(
        &self,
        req: Request<proto::KeepAliveRequest>,
    ) -> Result<Response<proto::KeepAliveResponse>, Status> {
        let id = req.into_inner().lease;
        let ttl = (self.shared)
            .with_store(|s| s.keep_alive(id, time::now()))
            .ok_or_else(|| Error::NotFound(format!("lease {id} not found")))?;
        Ok(Response::new(proto::KeepAliveResponse {
            ttl_ms: millis(ttl),
        }))
    }

    async fn revoke(
        &self,
        req: Request<proto::RevokeRequest>,
    ) -> Result<Response<proto::RevokeResponse>, Status> {
        let id = req.into_inner().lease;
        let revision = (self.shared)
            .with_store(|s| s.revoke(id))
            .ok_or_else(|| Error::NotFound(format!("lease {id} not found")))?;
        Ok(Response::new(proto::RevokeResponse { revision }))
    }

    async fn put(
        &self,
        req: Request<proto::PutRequest>,
    ) -> Result<Response<proto::PutResponse>, Status> {
        let req = req.into_inner();
        let (revision, written) = (self.shared)
            .with_store(|s| s.put(&req.key, req.value.into(), req.lease, req.if_absent))?;
        Ok(Response::new(proto::PutResponse { revision, written }))
    }

    async fn delete(
        &self,
        req: Request<proto::DeleteRequest>,
    ) -> Result<Response<proto::DeleteResponse>, Status> {
        let key = req.into_inner().key;
        let revision = self.shared.with_store(|s| s.delete(&key));
        Ok(Response::new(proto::DeleteResponse { revision }))
    }

    async fn range(
        &self,
        req: Request<proto::RangeRequest>,
    ) -> Result<Response<proto::RangeResponse>, Status> {
        let prefix = req.into_inner().prefix;
        let (kvs, revision) = self.shared.with_store(|s| s.range(&prefix));
        Ok(Response::new(proto::RangeResponse {
            kvs: kvs.into_iter().map(Into::into).collect(),
            revision,
        }))
    }

    type WatchStream = WatchResponses;

    async fn watch(
        &self,
        req: Request<proto::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = req.into_inner();
        let Subscription {
            rx,
            replay,
            current,
        } = (self.shared)
            .subscribe(&req.prefix, req.start_revision)
            .map_err(compacted)?;
        let watcher = Watcher {
            closing: self.shared.closing.clone(),
            shared: self.shared.clone(),
            prefix: req.prefix,
            // A start the store has not reached yet holds back the changes before it.
            next: (current + 1).max(req.start_revision),
            rx,
            replay,
            failed: false,
        };
        Ok(Response::new(Box::pin(futures::stream::unfold(
            watcher,
            Watcher::next_response,
        ))))
    }
}

/// One watch stream's position.
struct Watcher {
    shared: Arc<Shared>,
    closing: watch::Receiver<bool>,
    prefix: String,
    /// The first revision not yet delivered from the broadcast.
    next: i64,
    rx: broadcast::Receiver<Batch>,
    /// Events to deliver before the broadcast.
    replay: Vec<WatchEvent>,
    failed: bool,
}

impl Watcher {
    /// The next non-empty response; `None` when the registry shuts down or after an
    /// error was sent.
    async fn next_response(mut self) -> Option<(Result<proto::WatchResponse, Status>, Watcher)> {
        if self.failed {
            return None;
        }
        loop {
            if !self.replay.is_empty() {
                let events = std::mem::take(&mut self.replay);
                let events = events.into_iter().map(Into::into).collect();
                return Some((Ok(proto::WatchResponse { events }), self));
            }
            let received = tokio::select! {
                _ = self.closing.wait_for(|closing| *closing) => return None,
                received = self.rx.recv() => received,
            };
            match received {
                Ok(batch) => {
                    self.replay = (batch.iter())
                        .filter(|e| e.revision() >= self.next && e.key().starts_with(&self.prefix))
                        .cloned()
                        .collect();
                    if let Some(last) = batch.last() {
                        self.next = self.next.max(last.revision() + 1);
                    }
                }
                // Fell behind the broadcast: catch up from the history instead.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    match self.shared.subscribe(&self.prefix, self.next) {
                        Ok(sub) => {
                            self.rx = sub.rx;
                            self.replay = sub.replay;
                            self.next = sub.current + 1;
                        }
                        Err(c) => {
                            self.failed = true;
                            return Some((Err(compacted(c)), self));
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
