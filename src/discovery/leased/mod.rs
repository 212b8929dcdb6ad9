//! [`LeasedDiscovery`]: each node keeps a record under `<prefix><member id>`, attached to
//! a lease it keeps alive, and follows everyone's records with a prefix watch. Any
//! [`Coordinator`] will do: the simulator's registry or etcd.
//!
//! A node counts itself in the membership while it holds its lease. When the
//! coordinator says the lease is gone (expired or revoked), or the watch shows our
//! record deleted or taken, the node publishes a view without itself, so it stops acting
//! as an owner and drops what it no longer owns, and registers again with backoff.
//!
//! A coordinator that cannot be reached changes nothing: the node keeps serving on the
//! last known membership and keeps trying. An etcd outage thus leaves every ring as it
//! was. The price: a node cut off from the coordinator while the others are not keeps
//! acting as owner of its keys in its own view after they have dropped it, and its
//! clients may read values written meanwhile through other nodes as they were, until
//! it reaches the coordinator again and hears that its lease is gone.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{Coordinator, Discovery};
use crate::error::{Error, Result};
use crate::ring::Member;

mod backoff;
mod follow;
mod keep;
mod shared;

use shared::Shared;

/// How a [`LeasedDiscovery`] registers and retries.
#[derive(Debug, Clone)]
pub struct LeasedConfig {
    /// Key prefix of the member records; a node's record is `<prefix><member id>`.
    pub prefix: String,
    /// Time to live of the node's lease: a crashed node leaves the others' views about
    /// this long after its last keep-alive. Keep-alives go every third of it.
    pub lease_ttl: Duration,
    /// Longest wait for each call to the coordinator.
    pub call_timeout: Duration,
    /// First pause after a failed attempt; pauses double up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest pause between attempts.
    pub backoff_max: Duration,
    /// Tells this process's record from a previous (or concurrent) process's with the
    /// same member id: a start counter or start time, different for every process.
    pub incarnation: u64,
    /// Seed of the backoff jitter.
    pub seed: u64,
}

impl Default for LeasedConfig {
    fn default() -> Self {
        LeasedConfig {
            prefix: "/peercache/members/".into(),
            lease_ttl: Duration::from_secs(3),
            call_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            incarnation: 0,
            seed: 0,
        }
    }
}

/// The JSON value of a member record.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    addr: String,
    weight: u32,
    incarnation: u64,
}

/// Membership from lease-backed records in a [`Coordinator`]. Background work (lease
/// keeping, watching) runs from [`join`](Discovery::join) until
/// [`leave`](Discovery::leave) or until this value is dropped; dropping it without
/// leaving is a crash: the record goes when the lease expires.
pub struct LeasedDiscovery<C: Coordinator> {
    coordinator: Arc<C>,
    config: LeasedConfig,
    running: tokio::sync::Mutex<Option<Running<C>>>,
}

struct Running<C: Coordinator> {
    shared: Arc<Shared<C>>,
    /// Aborted when dropped.
    tasks: JoinSet<()>,
}

impl<C: Coordinator> LeasedDiscovery<C> {
    /// A discovery keeping its records in `coordinator`.
    pub fn new(coordinator: Arc<C>, config: LeasedConfig) -> Self {
        LeasedDiscovery {
            coordinator,
            config,
            running: tokio::sync::Mutex::new(None),
        }
    }
}

#[async_trait]
impl<C: Coordinator> Discovery for LeasedDiscovery<C> {
    /// Registers `me`: if a record of another process holds the id, waits up to a lease
    /// TTL and a margin for it to expire, then fails with [`Error::Config`].
    async fn join(&self, me: Member) -> Result<watch::Receiver<Vec<Member>>> {
        let mut running = self.running.lock().await;
        if running.is_some() {
            return Err(Error::Config("this discovery has already joined".into()));
        }
        if me.id.is_empty() {
            return Err(Error::Config("empty member id".into()));
        }
        let shared = Arc::new(Shared::new(self.coordinator.clone(), &self.config, me)?);
        // A coordinator that cannot be reached yet (starting at the same time, a network
        // blip) is waited for; only a refusal (the id taken by a live process) ends it.
        let mut backoff = shared.backoff();
        let (registration, kvs, revision) = loop {
            let attempt = async {
                let registration = shared.register(true).await?;
                match shared.call(shared.c.range(&shared.config.prefix)).await {
                    Ok((kvs, revision)) => Ok((registration, kvs, revision)),
                    Err(e) => {
                        let _ = shared.call(shared.c.revoke(registration.lease.id)).await;
                        Err(e)
                    }
                }
            };
            match attempt.await {
                Ok(joined) => break joined,
                Err(e @ Error::Config(_)) => return Err(e),
                Err(e) => {
                    let pause = backoff.next(&mut shared.rng.lock());
                    tracing::warn!(error = %e, ?pause, "cannot register yet; retrying");
                    crate::time::sleep(pause).await;
                }
            }
        };
        shared.registered(registration);
        shared.reset(kvs, revision);
        let mut tasks = JoinSet::new();
        tasks.spawn(shared.clone().keep(registration));
        tasks.spawn(shared.clone().follow(revision));
        let members = shared.members.subscribe();
        *running = Some(Running { shared, tasks });
        Ok(members)
    }

    /// Stops the background work, deletes the record and revokes the lease.
    async fn leave(&self) -> Result<()> {
        let Some(Running { shared, mut tasks }) = self.running.lock().await.take() else {
            return Ok(());
        };
        tasks.shutdown().await;
        let (registered, lease) = {
            let mut state = shared.state.lock();
            let registered = state.registered.take().is_some();
            shared.publish(&state);
            (registered, state.lease)
        };
        // Not registered: the key may be another process's now; revoking our lease
        // removes it only if it is still ours.
        let deleted = match registered {
            true => shared.call(shared.c.delete(&shared.key)).await.map(drop),
            false => Ok(()),
        };
        let revoked = match lease {
            Some(lease) => shared.call(shared.c.revoke(lease.id)).await,
            None => Ok(()),
        };
        deleted.and(revoked)
    }
}
