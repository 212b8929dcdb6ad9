//! [`LeasedDiscovery`]: each node keeps a record under `<prefix><member id>`, attached to
//! a lease it keeps alive, and follows everyone's records with a prefix watch. Any
//! [`Coordinator`] will do: the simulator's registry or etcd.
//!
//! A node counts itself in the membership only while it holds its lease. If the
//! coordinator says the lease is gone, or no keep-alive succeeded for a whole TTL
//! (measured from the *sending* of the last one that did, so the node gives up no later
//! than the coordinator expires it), the node publishes a view without itself, so it
//! stops acting as an owner, and registers again with backoff.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Coordinator, Discovery, KeyValue, Lease, WatchEvent};
use crate::ring::Member;
use crate::{Error, Result};

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
        let registration = shared.register(true).await?;
        let (kvs, revision) = match shared.call(shared.c.range(&shared.config.prefix)).await {
            Ok(read) => read,
            Err(e) => {
                let _ = shared.call(shared.c.revoke(registration.lease.id)).await;
                return Err(e);
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

/// A successful registration.
#[derive(Debug, Clone, Copy)]
struct Registration {
    lease: Lease,
    /// When the grant was sent: the lease cannot expire before this plus its TTL.
    granted_at: Instant,
    /// Revision of the write of our record.
    revision: i64,
}

/// A record as last seen.
struct Seen {
    member: Member,
    incarnation: u64,
}

struct State {
    /// The records under the prefix at `revision`, by member id (ours included).
    seen: BTreeMap<String, Seen>,
    revision: i64,
    /// Set while we count ourselves in.
    registered: Option<Registration>,
    /// The lease we hold or last held, for leave.
    lease: Option<Lease>,
    /// The watch saw our record deleted or taken after we registered.
    lost: bool,
}

/// What the join, the keeper and the follower share.
struct Shared<C> {
    c: Arc<C>,
    config: LeasedConfig,
    me: Member,
    key: String,
    record: Vec<u8>,
    members: watch::Sender<Vec<Member>>,
    state: Mutex<State>,
    /// Wakes the keeper when `lost` is set.
    lost: Notify,
    /// Wakes the follower from its backoff: we registered again after losing the
    /// lease, so the coordinator is likely back and our view of the others stale.
    resync: Notify,
    rng: Mutex<SmallRng>,
}

impl<C: Coordinator> Shared<C> {
    fn new(c: Arc<C>, config: &LeasedConfig, me: Member) -> Result<Self> {
        let record = serde_json::to_vec(&Record {
            addr: me.addr.clone(),
            weight: me.weight,
            incarnation: config.incarnation,
        })
        .map_err(|e| Error::Config(format!("member record: {e}")))?;
        Ok(Shared {
            c,
            key: format!("{}{}", config.prefix, me.id),
            config: config.clone(),
            me,
            record,
            members: watch::Sender::new(Vec::new()),
            state: Mutex::new(State {
                seen: BTreeMap::new(),
                revision: 0,
                registered: None,
                lease: None,
                lost: false,
            }),
            lost: Notify::new(),
            resync: Notify::new(),
            rng: Mutex::new(SmallRng::seed_from_u64(config.seed)),
        })
    }

    /// `f`, given up after the call timeout.
    async fn call<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout(self.config.call_timeout, f)
            .await
            .unwrap_or(Err(Error::Timeout))
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            min: self.config.backoff_min,
            max: self.config.backoff_max.max(self.config.backoff_min),
            next: self.config.backoff_min,
        }
    }

    /// A pause from `backoff`, jittered.
    async fn pause(&self, backoff: &mut Backoff) {
        let d = backoff.next(&mut self.rng.lock());
        tokio::time::sleep(d).await;
    }

    /// A pause from `backoff`, cut short by a resync.
    async fn pause_unless_resync(&self, backoff: &mut Backoff) {
        tokio::select! {
            () = self.pause(backoff) => {}
            () = self.resync.notified() => {}
        }
    }

    /// Grants a lease and writes our record under it. A record of another incarnation is
    /// waited out; if `join`, for one lease TTL and a margin, then it is an error.
    async fn register(&self, join: bool) -> Result<Registration> {
        let mut backoff = self.backoff();
        let mut give_up = None;
        loop {
            let granted_at = Instant::now();
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
                give_up = Some(Instant::now() + lease.ttl + margin);
            }
            tracing::warn!(id = %self.me.id, "member id registered by another process; waiting");
            loop {
                match self.held_by_other().await {
                    Ok(false) => break,
                    Ok(true) => {}
                    Err(e) if join => return Err(e),
                    Err(e) => tracing::debug!(error = %e, "reading our record failed"),
                }
                if give_up.is_some_and(|t| Instant::now() >= t) {
                    return Err(Error::Config(format!(
                        "node id {} is already registered by a live process",
                        self.me.id
                    )));
                }
                let wake = Instant::now() + backoff.next(&mut self.rng.lock());
                tokio::time::sleep_until(give_up.map_or(wake, |t: Instant| t.min(wake))).await;
            }
        }
    }

    /// Creates our record under `lease`, or overwrites it if the record there is ours
    /// (a previous lease of this process); `None` if another incarnation's is there.
    async fn write_record(&self, lease: Lease) -> Result<Option<i64>> {
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
    async fn record_here(&self) -> Result<Option<KeyValue>> {
        let (kvs, _) = self.call(self.c.range(&self.key)).await?;
        Ok(kvs.into_iter().find(|kv| kv.key == self.key))
    }

    /// Whether another incarnation's record holds our key (errors count as yes).
    async fn held_by_other(&self) -> Result<bool> {
        Ok(self
            .record_here()
            .await?
            .is_some_and(|kv| !self.is_mine(&kv)))
    }

    fn is_mine(&self, kv: &KeyValue) -> bool {
        serde_json::from_slice::<Record>(&kv.value)
            .is_ok_and(|r| r.incarnation == self.config.incarnation)
    }

    /// Keeps the lease alive; when it is lost, drops out of the view and registers
    /// again. Runs until aborted.
    async fn keep(self: Arc<Self>, mut registration: Registration) {
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

    /// Sends keep-alives every third of the TTL; returns when the lease is gone, no
    /// keep-alive succeeded for a whole TTL, or the watch saw our record go.
    async fn keep_alive(&self, registration: Registration) {
        let lease = registration.lease;
        let every = lease.ttl / 3;
        let mut last_ok = registration.granted_at;
        let mut wait = every;
        loop {
            let deadline = last_ok + lease.ttl;
            tokio::select! {
                () = tokio::time::sleep_until((Instant::now() + wait).min(deadline)) => {}
                () = self.lost.notified() => {
                    if self.state.lock().lost {
                        return;
                    }
                    continue;
                }
            }
            let sent = Instant::now();
            if sent >= deadline {
                return;
            }
            let call_deadline = (sent + self.config.call_timeout).min(deadline);
            match tokio::time::timeout_at(call_deadline, self.c.keep_alive(lease.id)).await {
                Ok(Ok(Some(_))) => {
                    last_ok = sent;
                    wait = every;
                }
                Ok(Ok(None)) => return,
                Ok(Err(e)) => {
                    tracing::debug!(lease = lease.id, error = %e, "keep-alive failed");
                    wait = every.min(self.config.backoff_min);
                }
                Err(_) => wait = every.min(self.config.backoff_min),
            }
        }
    }

    /// Follows the records: range, watch from the next revision, and on any error or
    /// end of the watch, back off and start over. Runs until aborted.
    async fn follow(self: Arc<Self>, mut revision: i64) {
        let prefix = self.config.prefix.clone();
        let mut backoff = self.backoff();
        let mut read = true;
        loop {
            if !read {
                match self.call(self.c.range(&prefix)).await {
                    Ok((kvs, r)) => {
                        revision = r;
                        self.reset(kvs, r);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "range failed");
                        self.pause_unless_resync(&mut backoff).await;
                        continue;
                    }
                }
            }
            read = false;
            match self.call(self.c.watch(&prefix, revision + 1)).await {
                Ok(mut events) => {
                    while let Some(batch) = events.next().await {
                        match batch {
                            Ok(batch) => {
                                backoff.reset();
                                revision = self.apply(batch);
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "watch failed");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "watch refused"),
            }
            self.pause_unless_resync(&mut backoff).await;
        }
    }

    fn registered(&self, registration: Registration) {
        let mut state = self.state.lock();
        state.registered = Some(registration);
        state.lost = false;
        self.publish(&state);
    }

    /// Takes a fresh read of the records as the whole truth. Its revision may be below
    /// the last one seen: a restarted registry starts again from 1.
    fn reset(&self, kvs: Vec<KeyValue>, revision: i64) {
        let mut state = self.state.lock();
        let went_back = revision < state.revision;
        state.seen = kvs.into_iter().filter_map(|kv| self.parse(kv)).collect();
        state.revision = revision;
        self.check_mine(&mut state, revision, went_back);
        self.publish(&state);
    }

    /// Applies watched changes; returns the last revision.
    fn apply(&self, events: Vec<WatchEvent>) -> i64 {
        let mut state = self.state.lock();
        for event in events {
            let revision = event.revision();
            let mine = event.key() == self.key;
            match event {
                WatchEvent::Put(kv) => {
                    let id = kv.key.get(self.config.prefix.len()..).unwrap_or_default();
                    state.seen.remove(id);
                    if let Some((id, seen)) = self.parse(kv) {
                        state.seen.insert(id, seen);
                    }
                }
                WatchEvent::Delete { key, .. } => {
                    let id = key.get(self.config.prefix.len()..).unwrap_or_default();
                    state.seen.remove(id);
                }
            }
            state.revision = revision;
            if mine {
                self.check_mine(&mut state, revision, false);
            }
        }
        self.publish(&state);
        state.revision
    }

    /// While registered, a state after our registration without our record means we
    /// lost it (deleted, taken by another process, or a registry that forgot it).
    fn check_mine(&self, state: &mut State, revision: i64, went_back: bool) {
        let Some(registration) = state.registered else {
            return;
        };
        if revision <= registration.revision && !went_back {
            return;
        }
        let ours =
            (state.seen.get(&self.me.id)).is_some_and(|s| s.incarnation == self.config.incarnation);
        if !ours {
            state.lost = true;
            self.lost.notify_one();
        }
    }

    fn parse(&self, kv: KeyValue) -> Option<(String, Seen)> {
        let id = kv.key.strip_prefix(&self.config.prefix)?;
        match serde_json::from_slice::<Record>(&kv.value) {
            Ok(r) => Some((
                id.to_owned(),
                Seen {
                    member: Member::new(id, r.addr).with_weight(r.weight),
                    incarnation: r.incarnation,
                },
            )),
            Err(e) => {
                tracing::warn!(key = %kv.key, error = %e, "ignoring a bad member record");
                None
            }
        }
    }

    /// Publishes the members seen, sorted by id: without us unless registered.
    fn publish(&self, state: &State) {
        let mut view: Vec<Member> = (state.seen.values())
            .filter(|s| s.member.id != self.me.id)
            .map(|s| s.member.clone())
            .collect();
        if state.registered.is_some() {
            view.push(self.me.clone());
        }
        view.sort_by(|a, b| a.id.cmp(&b.id));
        self.members.send_if_modified(|old| {
            let changed = *old != view;
            if changed {
                *old = view;
            }
            changed
        });
    }
}

/// Exponential backoff with equal jitter: each pause is half the step plus up to half
/// again at random.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn next(&mut self, rng: &mut SmallRng) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(self.max);
        step / 2 + (step / 2).mul_f64(rng.random::<f64>())
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}
