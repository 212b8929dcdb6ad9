//! The registry's state machine: keys, leases, the revision and the event history for
//! watch replay. No IO and no clock: whatever depends on time takes `now`, and the
//! changes each call makes are queued for the caller to broadcast.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crate::time::Instant;

use crate::discovery::{KeyValue, Lease, LeaseId, WatchEvent};
use crate::error::{Error, Result};

/// A watch asked for revisions the history no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Compacted {
    /// The first revision a watch may still start from.
    pub(crate) first: i64,
}

struct LeaseState {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

/// Keys, leases and history, with etcd's revision rules (see the `Coordinator` docs).
pub(crate) struct Store {
    revision: i64,
    keys: BTreeMap<String, KeyValue>,
    leases: BTreeMap<LeaseId, LeaseState>,
    next_lease: LeaseId,
    /// The latest events in revision order; every event with a revision above
    /// `compacted` is here.
    history: VecDeque<WatchEvent>,
    history_limit: usize,
    compacted: i64,
    /// Events of the calls since the last [`Store::take_events`].
    outbox: Vec<WatchEvent>,
}

impl Store {
    /// An empty store at revision 1, handing out lease ids from `first_lease` (at least
    /// 1) and keeping about `history_limit` events for watches.
    pub(crate) fn new(first_lease: LeaseId, history_limit: usize) -> Self {
        Store {
            revision: 1,
            keys: BTreeMap::new(),
            leases: BTreeMap::new(),
            next_lease: first_lease.max(1),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 0,
            outbox: Vec::new(),
        }
    }

    /// The current revision.
    pub(crate) fn revision(&self) -> i64 {
        self.revision
    }

    pub(crate) fn grant(&mut self, ttl: Duration, now: Instant) -> Result<Lease> {
        if ttl.is_zero() {
            return Err(Error::Invalid("lease TTL must be positive".into()));
        }
        let id = self.next_lease;
        self.next_lease = self.next_lease.checked_add(1).unwrap_or(1);
        let lease = LeaseState {
            ttl,
            deadline: now + ttl,
            keys: BTreeSet::new(),
        };
        self.leases.insert(id, lease);
        Ok(Lease { id, ttl })
    }

    /// Restarts the lease's TTL; `None` if it is gone (or overdue: expiry is due now).
    pub(crate) fn keep_alive(&mut self, id: LeaseId, now: Instant) -> Option<Duration> {
        let lease = self.leases.get_mut(&id).filter(|l| l.deadline > now)?;
        lease.deadline = now + lease.ttl;
        Some(lease.ttl)
    }

    /// Removes the lease and its keys; `None` if there was no such lease.
    pub(crate) fn revoke(&mut self, id: LeaseId) -> Option<i64> {
        let lease = self.leases.remove(&id)?;
        if !lease.keys.is_empty() {
            // etcd deletes a lease's keys in one transaction: one revision for all.
            self.revision += 1;
            for key in lease.keys {
                self.keys.remove(&key);
                self.record(WatchEvent::Delete {
                    key,
                    revision: self.revision,
                });
            }
        }
        Some(self.revision)
    }

    /// Revokes every lease whose deadline has come.
    pub(crate) fn expire(&mut self, now: Instant) {
        let due: Vec<LeaseId> = (self.leases.iter())
            .filter(|(_, l)| l.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            self.revoke(id);
        }
    }

    /// The earliest lease deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.leases.values().map(|l| l.deadline).min()
    }

    /// Writes `key` (unless `if_absent` and it exists); returns the revision and whether
    /// it wrote.
    pub(crate) fn put(
        &mut self,
        key: &str,
        value: Vec<u8>,
        lease: LeaseId,
        if_absent: bool,
    ) -> Result<(i64, bool)> {
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        if lease != 0 && !self.leases.contains_key(&lease) {
            return Err(Error::NotFound(format!("lease {lease} not found")));
        }
        let old = self.keys.get(key);
        if if_absent && old.is_some() {
            return Ok((self.revision, false));
        }
        let old_lease = old.map_or(0, |kv| kv.lease);
        if old_lease != lease
            && let Some(l) = self.leases.get_mut(&old_lease)
        {
            l.keys.remove(key);
        }
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.insert(key.to_owned());
        }
        self.revision += 1;
        let kv = KeyValue {
            key: key.to_owned(),
            value,
            create_revision: old.map_or(self.revision, |kv| kv.create_revision),
            mod_revision: self.revision,
            lease,
        };
        self.keys.insert(key.to_owned(), kv.clone());
        self.record(WatchEvent::Put(kv));
        Ok((self.revision, true))
    }

    /// Deletes `key`; returns the delete's revision, or the current one if it was absent.
    pub(crate) fn delete(&mut self, key: &str) -> i64 {
        if let Some(kv) = self.keys.remove(key) {
            if let Some(l) = self.leases.get_mut(&kv.lease) {
                l.keys.remove(key);
            }
            self.revision += 1;
            self.record(WatchEvent::Delete {
                key: kv.key,
                revision: self.revision,
            });
        }
        self.revision
    }

    /// The keys under `prefix`, sorted, and the current revision.
    pub(crate) fn range(&self, prefix: &str) -> (Vec<KeyValue>, i64) {
        let kvs = (self.keys.range(prefix.to_owned()..))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv.clone())
            .collect();
        (kvs, self.revision)
    }

    /// The remembered events with revision `>= from`, or `Compacted` if some are gone.
    pub(crate) fn since(&self, from: i64) -> Result<Vec<WatchEvent>, Compacted> {
        if from <= self.compacted {
            return Err(Compacted {
                first: self.compacted + 1,
            });
        }
        let start = self.history.partition_point(|e| e.revision() < from);
        Ok(self.history.range(start..).cloned().collect())
    }

    /// The events of the calls since the last take, in revision order.
    pub(crate) fn take_events(&mut self) -> Vec<WatchEvent> {
        std::mem::take(&mut self.outbox)
    }

    fn record(&mut self, event: WatchEvent) {
        self.history.push_back(event.clone());
        self.outbox.push(event);
        if self.history.len() <= self.history_limit {
            return;
        }
        // Forget whole revisions only, so a replay never starts half-way through one.
        let oldest = self.history[0].revision();
        while self.history.front().is_some_and(|e| e.revision() == oldest) {
            self.history.pop_front();
        }
        self.compacted = oldest;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(3);

    fn revisions(events: &[WatchEvent]) -> Vec<(String, i64)> {
        let kind = |e: &WatchEvent| match e {
            WatchEvent::Put(_) => "put",
            WatchEvent::Delete { .. } => "del",
        };
        (events.iter())
            .map(|e| (format!("{} {}", kind(e), e.key()), e.revision()))
            .collect()
    }

    #[test]
    fn revisions_count_writes_that_change_something() {
        let mut s = Store::new(1, 100);
        assert_eq!(s.revision(), 1);
        assert_eq!(s.put("a", b"1".to_vec(), 0, false), Ok((2, true)));
        assert_eq!(s.put("a", b"2".to_vec(), 0, true), Ok((2, false)));
        assert_eq!(s.put("a", b"3".to_vec(), 0, false), Ok((3, true)));
        assert_eq!(s.delete("missing"), 3);
        assert_eq!(s.delete("a"), 4);
        let now = Instant::now();
        let lease = s.grant(TTL, now).unwrap();
        assert_eq!(
            s.revoke(lease.id),
            Some(4),
            "a lease without keys changes nothing"
        );
        assert_eq!(s.revoke(lease.id), None);
        let (kvs, rev) = s.range("");
        assert!(kvs.is_empty());
        assert_eq!(rev, 4);
    }

    #[test]
    fn create_revision_survives_updates() {
        let mut s = Store::new(1, 100);
        s.put("k", vec![1], 0, false).unwrap();
        s.put("k", vec![2], 0, false).unwrap();
        let (kvs, _) = s.range("k");
        assert_eq!((kvs[0].create_revision, kvs[0].mod_revision), (2, 3));
    }

    #[test]
    fn expiry_deletes_a_leases_keys_at_one_revision() {
        let mut s = Store::new(7, 100);
        let now = Instant::now();
        let lease = s.grant(TTL, now).unwrap();
        assert_eq!(lease.id, 7);
        s.put("p/a", vec![], lease.id, false).unwrap();
        s.put("p/b", vec![], lease.id, false).unwrap();
        s.put("q", vec![], 0, false).unwrap();
        s.take_events();
        assert_eq!(s.next_deadline(), Some(now + TTL));
        s.expire(now + TTL - Duration::from_millis(1));
        assert_eq!(s.range("p/").0.len(), 2);
        assert_eq!(s.keep_alive(lease.id, now + TTL), None, "overdue");
        s.expire(now + TTL);
        assert_eq!(s.range("p/").0.len(), 0);
        assert_eq!(s.range("q").0.len(), 1);
        assert_eq!(
            revisions(&s.take_events()),
            [("del p/a".into(), 5), ("del p/b".into(), 5)]
        );
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn keep_alive_restarts_the_ttl() {
        let mut s = Store::new(1, 100);
        let now = Instant::now();
        let lease = s.grant(TTL, now).unwrap();
        let later = now + TTL - Duration::from_millis(1);
        assert_eq!(s.keep_alive(lease.id, later), Some(TTL));
        assert_eq!(s.next_deadline(), Some(later + TTL));
        assert_eq!(s.keep_alive(99, later), None);
        assert!(s.grant(Duration::ZERO, now).is_err());
    }

    #[test]
    fn a_put_moves_the_key_to_the_new_lease() {
        let mut s = Store::new(1, 100);
        let now = Instant::now();
        let (a, b) = (s.grant(TTL, now).unwrap(), s.grant(TTL, now).unwrap());
        s.put("k", vec![], a.id, false).unwrap();
        s.put("k", vec![], b.id, false).unwrap();
        s.revoke(a.id);
        assert_eq!(s.range("k").0[0].lease, b.id);
        s.revoke(b.id);
        assert!(s.range("k").0.is_empty());
        assert!(matches!(
            s.put("k", vec![], a.id, false),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn range_matches_the_prefix_only() {
        let mut s = Store::new(1, 100);
        for k in ["a/1", "a/2", "a0", "b/1", "a/"] {
            s.put(k, vec![], 0, false).unwrap();
        }
        let keys: Vec<String> = s.range("a/").0.into_iter().map(|kv| kv.key).collect();
        assert_eq!(keys, ["a/", "a/1", "a/2"]);
    }

    #[test]
    fn history_forgets_whole_revisions() {
        let mut s = Store::new(1, 3);
        let lease = s.grant(TTL, Instant::now()).unwrap();
        s.put("a", vec![], lease.id, false).unwrap(); // 2
        s.put("b", vec![], lease.id, false).unwrap(); // 3
        s.revoke(lease.id); // 4: two deletes; four events, so 2 goes
        assert_eq!(s.since(2), Err(Compacted { first: 3 }));
        assert_eq!(revisions(&s.since(3).unwrap()).len(), 3);
        s.put("c", vec![], 0, false).unwrap(); // 5: 3 goes
        assert_eq!(s.since(3), Err(Compacted { first: 4 }));
        assert_eq!(s.since(1), Err(Compacted { first: 4 }));
        s.put("d", vec![], 0, false).unwrap(); // 6: the two deletes of 4 go together
        assert_eq!(s.since(4), Err(Compacted { first: 5 }));
        assert_eq!(
            revisions(&s.since(5).unwrap()),
            [("put c".into(), 5), ("put d".into(), 6)]
        );
        assert!(s.since(7).unwrap().is_empty());
    }
}
