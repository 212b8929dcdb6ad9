//! The state the join, the lease keeper and the follower share, and the view published
//! from it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::time::{self, Instant};
use parking_lot::Mutex;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::{Notify, watch};

use super::backoff::Backoff;
use super::{LeasedConfig, Record};
use crate::discovery::{Coordinator, KeyValue, Lease};
use crate::error::{Error, Result};
use crate::ring::Member;

/// A successful registration.
#[derive(Debug, Clone, Copy)]
pub(super) struct Registration {
    pub(super) lease: Lease,
    /// When the grant was sent: the lease cannot expire before this plus its TTL.
    pub(super) granted_at: Instant,
    /// Revision of the write of our record.
    pub(super) revision: i64,
}

/// A record as last seen.
pub(super) struct Seen {
    pub(super) member: Member,
    pub(super) incarnation: u64,
}

/// What a node knows of the records and of its own registration.
pub(super) struct State {
    /// The records under the prefix at `revision`, by member id (ours included).
    pub(super) seen: BTreeMap<String, Seen>,
    pub(super) revision: i64,
    /// Set while we count ourselves in.
    pub(super) registered: Option<Registration>,
    /// The lease we hold or last held, for leave.
    pub(super) lease: Option<Lease>,
    /// The watch saw our record deleted or taken after we registered.
    pub(super) lost: bool,
}

/// What the join, the keeper and the follower share.
pub(super) struct Shared<C> {
    pub(super) c: Arc<C>,
    pub(super) config: LeasedConfig,
    pub(super) me: Member,
    pub(super) key: String,
    pub(super) record: Vec<u8>,
    pub(super) members: watch::Sender<Vec<Member>>,
    pub(super) state: Mutex<State>,
    /// Wakes the keeper when `lost` is set.
    pub(super) lost: Notify,
    /// Wakes the follower from its backoff: we registered again after losing the
    /// lease, so the coordinator is likely back and our view of the others stale.
    pub(super) resync: Notify,
    pub(super) rng: Mutex<SmallRng>,
}

impl<C: Coordinator> Shared<C> {
    pub(super) fn new(c: Arc<C>, config: &LeasedConfig, me: Member) -> Result<Self> {
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
    pub(super) async fn call<T>(&self, f: impl Future<Output = Result<T>>) -> Result<T> {
        time::within(self.config.call_timeout, f).await?
    }

    /// A fresh backoff with the configured steps.
    pub(super) fn backoff(&self) -> Backoff {
        Backoff::new(self.config.backoff_min, self.config.backoff_max)
    }

    /// A pause from `backoff`, jittered.
    pub(super) async fn pause(&self, backoff: &mut Backoff) {
        let d = backoff.next(&mut self.rng.lock());
        time::sleep(d).await;
    }

    /// A pause from `backoff`, cut short by a resync.
    pub(super) async fn pause_unless_resync(&self, backoff: &mut Backoff) {
        tokio::select! {
            () = self.pause(backoff) => {}
            () = self.resync.notified() => {}
        }
    }

    /// Counts us in from `registration` on.
    pub(super) fn registered(&self, registration: Registration) {
        let mut state = self.state.lock();
        state.registered = Some(registration);
        state.lost = false;
        self.publish(&state);
    }

    /// Whether `kv` is a record of this process.
    pub(super) fn is_mine(&self, kv: &KeyValue) -> bool {
        serde_json::from_slice::<Record>(&kv.value)
            .is_ok_and(|r| r.incarnation == self.config.incarnation)
    }

    /// The member id and record of `kv`; `None` (and a warning) for a bad record.
    pub(super) fn parse(&self, kv: KeyValue) -> Option<(String, Seen)> {
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
    pub(super) fn publish(&self, state: &State) {
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
