//! Holding the lease: registration (with the same-id rule), keep-alives, and
//! registering again after the lease is lost.

use std::sync::Arc;
use std::time::Duration;

use crate::time::{self, Instant};

use super::shared::{Registration, Shared};
use crate::discovery::{Coordinator, KeyValue, Lease};
use crate::error::{Error, Result};

impl<C: Coordinator> Shared<C> {
    /// Grants a lease and writes our record under it. A record of another incarnation is
    /// waited out; if `join`, for one lease TTL and a margin, then it is an error.
    pub(super) async fn register(&self, join: bool) -> Result<Registration> {
        let mut backoff = self.backoff();
        let mut give_up = None;
        loop {
            let granted_at = time::now();
            let lease = self.call(self.c.grant(self.config.lease_ttl)).await?;
            self.state.lock().lease = Some(lease);
            let written = self.write_record(lease).await;
            if let Ok(Some(revision)) = written {
                tracing::info!(id = %self.me.id, lease = lease.id, revision, "registered");
                return Ok(Registration {
                    lease,
                    granted_at,
                    revision,
                });
            }
            let _ = self.call(self.c.revoke(lease.id)).await;
            written?;
            // Another process's record (or a crashed one's, until its lease expires).
            if join && give_up.is_none() {
                let margin = (lease.ttl / 2).max(Duration::from_millis(500));
                give_up = Some(time::now() + lease.ttl + margin);
            }
            tracing::warn!(id = %self.me.id, "member id registered by another process; waiting");
            loop {
                match self.held_by_other().await {
                    Ok(false) => break,
                    Ok(true) => {}
                    Err(e) if join => return Err(e),
                    Err(e) => tracing::debug!(error = %e, "reading our record failed"),
                }
                if give_up.is_some_and(|t| time::now() >= t) {
                    return Err(Error::Config(format!(
                        "node id {} is already registered by a live process",
                        self.me.id
                    )));
                }
                let wake = time::now() + backoff.next(&mut self.rng.lock());
                time::sleep_until(give_up.map_or(wake, |t: Instant| t.min(wake))).await;
            }
        }
    }

    /// Creates our record under `lease`, or overwrites it if the record there is ours
    /// (a previous lease of this process); `None` if another incarnation's is there.
    pub(super) async fn write_record(&self, lease: Lease) -> Result<Option<i64>> {
        let (c, key) = (&self.c, self.key.as_str());
        if let Some(revision) = self
            .call(c.create(key, self.record.clone(), lease.id))
            .await?
        {
            return Ok(Some(revision));
        }
        match self.record_here().await? {
            Some(kv) if self.is_mine(&kv) => {
                let revision = self.call(c.put(key, self.record.clone(), lease.id)).await?;
                Ok(Some(revision))
            }
            Some(_) => Ok(None),
            // Gone in between: one more try.
            None => {
                self.call(c.create(key, self.record.clone(), lease.id))
                    .await
            }
        }
    }

    /// The record at our key.
    pub(super) async fn record_here(&self) -> Result<Option<KeyValue>> {
        let (kvs, _) = self.call(self.c.range(&self.key)).await?;
        Ok(kvs.into_iter().find(|kv| kv.key == self.key))
    }

    /// Whether another incarnation's record holds our key.
    pub(super) async fn held_by_other(&self) -> Result<bool> {
        Ok(self
            .record_here()
            .await?
            .is_some_and(|kv| !self.is_mine(&kv)))
    }

    /// Keeps the lease alive; when it is lost, drops out of the view and registers
    /// again. Runs until aborted.
    pub(super) async fn keep(self: Arc<Self>, mut registration: Registration) {
        loop {
            self.keep_alive(registration).await;
            tracing::warn!(id = %self.me.id, lease = registration.lease.id, "lease lost; out of the membership until registered again");
            {
                let mut state = self.state.lock();
                state.registered = None;
                self.publish(&state);
            }
            let mut backoff = self.backoff();
            registration = loop {
                match self.register(false).await {
                    Ok(r) => break r,
                    Err(e) => {
                        tracing::warn!(id = %self.me.id, error = %e, "registering again failed");
                        self.pause(&mut backoff).await;
                    }
                }
            };
            self.registered(registration);
            self.resync.notify_one();
        }
    }

    /// Sends keep-alives every third of the TTL; returns when the coordinator says the
    /// lease is gone or the watch saw our record go.
    ///
    /// A coordinator that cannot be reached proves nothing: it may be down for everyone
    /// (etcd restarting), and dropping out of our own view would then empty every
    /// node's cache at once. So the node keeps the last known membership, itself
    /// included, and keeps trying, with backoff once a whole TTL has passed; the
    /// coordinator's answer when it is back (the lease kept, or gone) decides.
    pub(super) async fn keep_alive(&self, registration: Registration) {
        let lease = registration.lease;
        let every = lease.ttl / 3;
        let mut last_ok = registration.granted_at;
        let mut wait = every;
        let mut backoff = self.backoff();
        let mut warned = false;
        loop {
            tokio::select! {
                () = time::sleep(wait) => {}
                () = self.lost.notified() => {
                    if self.state.lock().lost {
                        return;
                    }
                    continue;
                }
            }
            let sent = time::now();
            let failed = match self.call(self.c.keep_alive(lease.id)).await {
                Ok(Some(_)) => {
                    if warned {
                        tracing::info!(id = %self.me.id, lease = lease.id, "lease kept; the coordinator is back");
                    }
                    last_ok = sent;
                    wait = every;
                    backoff.reset();
                    warned = false;
                    continue;
                }
                Ok(None) => return,
                Err(e) => e,
            };
            tracing::debug!(lease = lease.id, error = %failed, "keep-alive failed");
            wait = if time::now() < last_ok + lease.ttl {
                // The lease may still be saved: retry soon.
                every.min(self.config.backoff_min)
            } else {
                if !warned {
                    tracing::warn!(id = %self.me.id, lease = lease.id, error = %failed, "no keep-alive for a whole TTL; keeping the last known membership");
                    warned = true;
                }
                backoff.next(&mut self.rng.lock())
            };
        }
    }
}
