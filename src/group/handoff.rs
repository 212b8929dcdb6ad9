//! Handoff: staying warm through membership changes.
//!
//! When a key moves to another owner its value usually still sits in the previous
//! owner's memory. Instead of loading it from the source again:
//!
//! - a node whose main cache loses keys to a membership change moves those entries to
//!   its handoff store, kept for the handoff window and never served to clients; within
//!   the window the key's new owner, on a miss, asks this node for the entry (`peek`,
//!   memory only, a short deadline) before it loads;
//! - a node leaving gracefully pushes its main entries, most recently used first
//!   within a time budget, to their owners in the ring without it (`push`); they keep
//!   them in their handoff store until the key is theirs and asked for.
//!
//! Handed entries are copies like any other: a write or an invalidation drops them
//! here. A new owner takes one into its main cache only if it has not itself applied
//! or routed a write of the key lately, and at the version floor it read before asking
//! (not the entry's own version, which another owner stamped): a write that lands
//! meanwhile raises the floor and refuses it.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures::future::join_all;

use super::Group;
use crate::buggify::{self, Bug};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::peer::{Fetched, PeerRef};
use crate::ring::Ring;
use crate::store::{Entry, Hit, Store};
use crate::time::{self, Instant};

/// Longest a new owner waits for a previous owner's entry before loading: a memory
/// lookup one hop away.
const PEEK_DEADLINE: Duration = Duration::from_millis(25);

/// A push carries at most this many entries, and at most about the largest entry the
/// group allows (what every member's message limit admits), at least one entry.
const PUSH_BATCH: usize = 256;
/// Bytes counted per pushed entry on top of its key and value: the protobuf fields.
const PUSH_ENTRY_OVERHEAD: usize = 32;

/// Entries in transit between owners, a store of their own (half the main cache's
/// capacity), or none when the group keeps no copies. Entries keep their own expiry;
/// the store is emptied once the handoff window has passed since the last entry came
/// in (a membership change moved some aside, or a leaving member pushed some).
pub(super) struct Handoff {
    store: Option<Box<dyn Store>>,
    /// When the last entry came in (group time).
    last_in: parking_lot::Mutex<Duration>,
}

impl Handoff {
    pub(super) fn new(store: Option<Box<dyn Store>>) -> Self {
        Handoff {
            store,
            last_in: parking_lot::Mutex::new(Duration::ZERO),
        }
    }

    /// Empties the store if `window` has passed since the last entry came in; returns
    /// how many entries it dropped.
    fn expire_window(&self, now: Duration, window: Duration) -> usize {
        let Some(store) = &self.store else {
            return 0;
        };
        if now.saturating_sub(*self.last_in.lock()) < window || store.is_empty() {
            return 0;
        }
        store.retain(&|_| false)
    }

    /// Drops every entry (handoff was turned off: a member came back).
    fn clear(&self) {
        if let Some(store) = &self.store {
            store.retain(&|_| false);
        }
    }

    /// Keeps `entry` of `key` (until it expires, or the window after `now` passes).
    fn keep(&self, key: &str, entry: Entry, now: Duration) -> bool {
        let Some(store) = &self.store else {
            return false;
        };
        *self.last_in.lock() = now;
        store.insert(key, entry).is_ok()
    }

    fn get(&self, key: &str, now: Duration) -> Option<Hit> {
        self.store.as_ref()?.get(key, now)
    }

    /// Drops the entry of `key` after a write stamped `version`.
    pub(super) fn drop_entry(&self, key: &str, version: u64) {
        if let Some(store) = &self.store {
            store.purge(key, version);
        }
    }

    /// Drops expired entries, and every entry once the handoff `window` has passed.
    pub(super) fn sweep(&self, now: Duration, window: Duration) -> usize {
        self.expire_window(now, window) + self.store.as_ref().map_or(0, |s| s.sweep(now))
    }
}

impl Group {
    /// Moves main-cache entries of keys this node no longer owns (`owns` refuses them)
    /// to the handoff store, where the keys' new owners find them for the handoff
    /// window; returns how many left the main cache.
    /// While handoff is off (a member came back lately, or no window is set) they are
    /// dropped instead, and so is everything the handoff store holds.
    pub(super) fn hand_off_unowned(&self, owns: &dyn Fn(&str) -> bool) -> usize {
        let inner = &*self.inner;
        let now = inner.epoch.now();
        let handing =
            (self.picker()).is_some_and(|p| p.handoff_allowed() && !p.handoff_window().is_zero());
        if !handing {
            inner.handoff.clear();
            return inner.main.retain(owns);
        }
        let moved = inner.main.collect(&|key| !owns(key), now, true);
        let count = moved.len();
        for (key, hit) in moved {
            let entry = Entry {
                expires_at: hit.expires_at(),
                value: hit.value,
                version: hit.version,
            };
            inner.handoff.keep(&key, entry, now);
        }
        count
    }

    /// Answers the peek of `asker`, a key's new owner: the entry of `key` this node
    /// holds in its main cache (whoever owns the key here) or its handoff store; never
    /// loads. Nothing while handoff is off here, nor to an asker that is not in this
    /// node's view but was before (it may be coming back, which this node has yet to
    /// notice): see [`crate::peer::PeerPicker::may_answer`].
    pub fn peek_for_peer(&self, key: &str, asker: &str) -> Result<Option<Fetched>> {
        Ok(self
            .peek_for_peer_as(key, asker, &[])?
            .map(|(held, _)| held))
    }

    /// [`Self::peek_for_peer`] for an asker that decodes the codecs of `accept`: an
    /// entry kept compressed in one of them is answered as it is kept, in the codec
    /// returned; with `--compress-wire-only`, compressed for it as a get's answer is.
    pub fn peek_for_peer_as(
        &self,
        key: &str,
        asker: &str,
        accept: &[Codec],
    ) -> Result<Option<(Fetched, Codec)>> {
        let inner = &*self.inner;
        inner.limits.check_key(key)?;
        if !self.picker().is_some_and(|p| p.may_answer(asker)) {
            return Ok(None);
        }
        let now = inner.epoch.now();
        let hit = (inner.main.get_as(key, now, accept))
            .or_else(|| Some((inner.handoff.get(key, now)?, Codec::Identity)));
        Ok(hit.map(|(hit, codec)| self.for_wire(self.fetched(hit), codec, accept)))
    }

    /// Keeps entries a leaving member pushed here, in the handoff store until this
    /// node owns their keys; returns how many it kept. Entries older than what this
    /// node has seen of their key are refused; any invalid entry (key or value over the
    /// limits, a version out of range) refuses the whole push.
    pub fn accept_pushed(&self, entries: Vec<(String, Fetched)>) -> Result<usize> {
        let inner = &*self.inner;
        for (key, entry) in &entries {
            inner.limits.check_key(key)?;
            inner.limits.check_value(&entry.value)?;
            super::writes::check_version(entry.version)?;
        }
        let now = inner.epoch.now();
        let Some(picker) = self.picker() else {
            return Err(Error::Unavailable("this node has not joined".into()));
        };
        if !picker.handoff_allowed() || picker.handoff_window().is_zero() {
            return Ok(0);
        }
        let mut kept = 0;
        for (key, entry) in entries {
            if entry.version < inner.main.floor(&key) || inner.writes.wrote_lately(&key, now) {
                continue;
            }
            let entry = Entry {
                expires_at: entry.expires_in.map(|d| now.saturating_add(d)),
                value: entry.value,
                version: entry.version,
            };
            kept += usize::from(inner.handoff.keep(&key, entry, now));
        }
        inner
            .counters
            .handoff_accepted
            .fetch_add(kept as u64, Relaxed);
        Ok(kept)
    }

    /// The entry of `key`, which this node owns now, from the handoff: its own handoff
    /// store (pushed here by a leaving member, or kept from when this node owned the
    /// key before), else its own copy from when another member owned the key (the hot
    /// cache: fetched from that owner, or loaded while it was unreachable), else the
    /// key's previous owner within the handoff window. Taken into
    /// the main cache at `floor`, the key's version floor read before; `None` if there
    /// is none to take, or this node applied or routed a write of the key lately.
    pub(super) async fn take_handed(&self, key: &str, floor: u64) -> Option<Fetched> {
        let inner = &*self.inner;
        let now = inner.epoch.now();
        let careless = buggify::planted(Bug::HandoffIgnoresFloor);
        if inner.writes.wrote_lately(key, now) && !careless {
            return None;
        }
        // Else this node's own copy from when the key was owned elsewhere: it keeps its
        // expiry, so it is served no longer than it would have been as a copy.
        let (fetched, promoted) = if let Some(hit) = inner.handoff.get(key, now) {
            (self.fetched(hit), false)
        } else if let Some(hit) = inner.hot.get(key, now) {
            (self.fetched(hit), true)
        } else {
            (self.peek_previous_owner(key).await?, false)
        };
        // Stamped by another owner, so not comparable with our versions in general;
        // but one below what we have seen of the key is certainly older.
        if fetched.version < floor && !careless {
            return None;
        }
        let floor = match careless {
            true => fetched.version,
            false => floor,
        };
        let now = inner.epoch.now();
        let entry = Entry {
            value: fetched.value.clone(),
            version: floor,
            expires_at: fetched.expires_in.map(|d| now.saturating_add(d)),
        };
        // A peeked value that came compressed is kept as it came when the codec is
        // this node's, not compressed again.
        let packed = fetched
            .packed
            .as_ref()
            .map(|(codec, bytes)| (*codec, bytes));
        inner.main.insert_packed(key, entry, packed).ok()?;
        match promoted {
            true => {
                inner.hot.forget(key, fetched.version);
                inner.counters.copies_promoted.fetch_add(1, Relaxed)
            }
            false => inner.counters.handoff_hits.fetch_add(1, Relaxed),
        };
        Some(Fetched {
            version: floor,
            ..fetched
        })
    }

    /// What this node holds of `key` (owned elsewhere) in its handoff store, to answer
    /// a peer whose view already names this node as the owner.
    pub(super) fn handed_copy(&self, key: &str) -> Option<Fetched> {
        let now = self.inner.epoch.now();
        self.inner
            .handoff
            .get(key, now)
            .map(|hit| self.fetched(hit))
    }

    /// Asks the previous owner of `key`, if there is one to ask, for its entry.
    async fn peek_previous_owner(&self, key: &str) -> Option<Fetched> {
        let picker = self.picker()?;
        let peer = picker.previous_owner(key)?;
        let inner = &*self.inner;
        inner.counters.handoff_peeks.fetch_add(1, Relaxed);
        let asker = picker.self_id();
        match peer.peek(&inner.name, key, asker, PEEK_DEADLINE).await {
            Ok(found) => {
                let found = found.filter(|f| super::writes::check_version(f.version).is_ok());
                picker.note_handoff(found.is_some());
                found
            }
            // Not an answer about the entry (a slow or suspected peer): not counted as
            // a miss.
            Err(why) => {
                tracing::debug!(group = %inner.name, peer = peer.id(), ?why, "peek failed");
                None
            }
        }
    }

    /// Pushes this node's main entries, most recently used first, to their owners in
    /// `ring` (the ring without this node), in batches, until `deadline`. Returns
    /// (entries sent, entries kept by their receivers).
    pub async fn push_to(&self, ring: &Ring, deadline: Instant) -> (usize, usize) {
        let inner = &*self.inner;
        let Some(picker) = self.picker().filter(|p| p.handoff_allowed()) else {
            return (0, 0);
        };
        let now = inner.epoch.now();
        let mut per_owner: BTreeMap<String, (PeerRef, Vec<(String, Fetched)>)> = BTreeMap::new();
        for (key, hit) in inner.main.collect(&|_| true, now, false) {
            let Some(owner) = ring.owner(&key) else {
                break;
            };
            let Some(peer) = picker.peer(&owner.id) else {
                continue;
            };
            let slot = per_owner.entry(owner.id.clone());
            let (_, entries) = slot.or_insert_with(|| (peer, Vec::new()));
            entries.push((key.into(), self.fetched(hit)));
        }
        let (name, budget) = (&inner.name, inner.limits.max_key + inner.limits.max_value);
        let pushes = per_owner.into_values().map(|(peer, entries)| async move {
            let (mut sent, mut kept) = (0, 0);
            for batch in batches(entries, budget) {
                let left = deadline.saturating_duration_since(time::now());
                if left.is_zero() {
                    break;
                }
                let n = batch.len();
                match peer.push(name, batch, left).await {
                    Ok(k) => (sent, kept) = (sent + n, kept + k),
                    Err(why) => {
                        tracing::warn!(group = %name, peer = peer.id(), ?why, "push to the new owner failed");
                        break;
                    }
                }
            }
            (sent, kept)
        });
        let done = join_all(pushes).await;
        let (sent, kept) = done
            .iter()
            .fold((0, 0), |(s, k), (s2, k2)| (s + s2, k + k2));
        inner
            .counters
            .handoff_pushed
            .fetch_add(kept as u64, Relaxed);
        (sent, kept)
    }
}

/// `entries` cut into pushes of at most [`PUSH_BATCH`] entries and `budget` bytes each
/// (keys, values and [`PUSH_ENTRY_OVERHEAD`]), but at least one entry each.
fn batches(entries: Vec<(String, Fetched)>, budget: usize) -> Vec<Vec<(String, Fetched)>> {
    let mut out: Vec<Vec<(String, Fetched)>> = Vec::new();
    let mut bytes = 0;
    for entry in entries {
        let size = entry.0.len() + entry.1.value.len() + PUSH_ENTRY_OVERHEAD;
        match out.last_mut() {
            Some(last) if last.len() < PUSH_BATCH && bytes + size <= budget => {
                bytes += size;
                last.push(entry);
            }
            _ => {
                bytes = size;
                out.push(vec![entry]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, len: usize) -> (String, Fetched) {
        let value = bytes::Bytes::from(vec![b'v'; len]);
        let fetched = Fetched {
            value,
            version: 1,
            expires_in: None,
            hot: false,
            packed: None,
        };
        (key.to_owned(), fetched)
    }

    #[test]
    fn pushes_are_cut_by_count_and_bytes() {
        let budget = 1 << 20;
        let many: Vec<_> = (0..600).map(|i| entry(&format!("k{i}"), 10)).collect();
        let sizes: Vec<usize> = batches(many, budget).iter().map(Vec::len).collect();
        assert_eq!(sizes, [256, 256, 88]);
        let half = budget / 2 - PUSH_ENTRY_OVERHEAD - 1;
        let big = vec![
            entry("a", half),
            entry("b", half),
            entry("c", 2 * budget),
            entry("d", 1),
            entry("e", 1),
        ];
        let sizes: Vec<usize> = batches(big, budget).iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 1, 2], "over the byte budget starts a new push");
        assert!(batches(Vec::new(), budget).is_empty());
    }
}
