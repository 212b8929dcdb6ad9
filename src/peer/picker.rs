//! The peer picker: the ring over the current members and a [`PeerClient`](super::PeerClient) per other member,
//! swapped as one immutable [`View`] whenever membership changes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::PeerRef;
use crate::ring::{Member, Ring};
use crate::time::{self, Instant};

/// How long after a membership change a key's new owner asks the previous owner for
/// its entry before loading it, by default in a node (a bare picker never asks).
pub const DEFAULT_HANDOFF_WINDOW: Duration = Duration::from_secs(30);

/// The handoff window ends early once this many asks in a row found nothing (a cluster
/// starting with empty caches, say): asking then only adds a round trip to each miss.
const HANDOFF_MISSES_TO_STOP: u32 = 256;

/// Makes the peer of a newly seen member (a gRPC client, in a node).
pub type Connect = Box<dyn Fn(&Member) -> crate::error::Result<PeerRef> + Send + Sync>;

/// Membership as one node sees it at one moment.
pub struct View {
    /// The ring over the members.
    pub ring: Ring,
    /// A peer per member other than this node, by member id.
    peers: BTreeMap<String, (Member, PeerRef)>,
    /// By index into the ring's members: whether a key that member owns is served here
    /// (it is this node, or a member without a peer), so the ownership check on every
    /// hit is one ring lookup and one index.
    local: Vec<bool>,
    /// The ring before the change that made this view (for a node new to the ring,
    /// the ring without it): where a key's previous owner is found for a handoff.
    previous: Option<Ring>,
    /// When this view replaced the previous one.
    since: Instant,
}

impl View {
    /// Whether `id` is a member of this view.
    pub fn has(&self, id: &str) -> bool {
        self.ring.member(id).is_some()
    }

    /// The view over `ring` and `peers` as node `self_id` sees it, replacing one over
    /// `previous`.
    fn new(
        ring: Ring,
        peers: BTreeMap<String, (Member, PeerRef)>,
        self_id: &str,
        previous: Option<Ring>,
    ) -> Self {
        let local = ring
            .members()
            .iter()
            .map(|m| m.id == self_id || !peers.contains_key(&m.id))
            .collect();
        View {
            ring,
            peers,
            local,
            previous,
            since: time::now(),
        }
    }
}

/// Who serves a key.
#[derive(Debug)]
pub enum Pick {
    /// This node owns the key (or knows no members yet).
    Local,
    /// Another member owns it.
    Peer(PeerRef),
}

/// Maps keys to owners; shared by every group of a node.
pub struct PeerPicker {
    self_id: String,
    vnodes: u32,
    connect: Connect,
    /// Read on every hit (ownership check), so lock-free: readers never write a
    /// shared cache line.
    view: ArcSwap<View>,
    /// How long after a change new owners ask previous ones (zero: never).
    handoff_window: Duration,
    /// Asks of previous owners in a row that found nothing, since the last change.
    handoff_misses: AtomicU32,
    /// Every member id this node has had in a view, and until when handoff is off
    /// because one came back (see [`PeerPicker::handoff_allowed`]).
    history: parking_lot::Mutex<History>,
}

/// Which members a node has seen, for telling a member that returns from a new one.
#[derive(Default)]
struct History {
    seen: std::collections::BTreeSet<String>,
    /// Handoff is off until then.
    off_until: Option<Instant>,
}

impl PeerPicker {
    /// A picker for the node `self_id`, knowing no members yet.
    pub fn new(self_id: impl Into<String>, vnodes: u32, connect: Connect) -> Self {
        PeerPicker {
            self_id: self_id.into(),
            vnodes,
            connect,
            view: ArcSwap::from_pointee(View::new(
                Ring::new([], vnodes),
                BTreeMap::new(),
                "",
                None,
            )),
            handoff_window: Duration::ZERO,
            handoff_misses: AtomicU32::new(0),
            history: Default::default(),
        }
    }

    /// Sets how long after a membership change a key's new owner asks the previous
    /// owner for its entry (zero: never; default [`DEFAULT_HANDOFF_WINDOW`]).
    pub fn with_handoff_window(mut self, window: Duration) -> Self {
        self.handoff_window = window;
        self
    }

    /// How long a handoff lasts after a membership change.
    pub fn handoff_window(&self) -> Duration {
        self.handoff_window
    }

    /// Whether entries may be handed between owners now: not within the handoff
    /// window after a member came back into this node's view (one it had in a view
    /// before, gone since: a node that lost its registration, or restarted). While it
    /// was gone the two may each have owned some keys in their own views and taken
    /// writes the other never heard of; what this node holds from that time may be
    /// stale in a way no version or invalidation here reveals, so it is not passed on
    /// (and stays where it is, as without handoff).
    pub fn handoff_allowed(&self) -> bool {
        if crate::buggify::planted(crate::buggify::Bug::HandoffAfterReturn) {
            return true;
        }
        let history = self.history.lock();
        history.off_until.is_none_or(|until| time::now() >= until)
    }

    /// Whether this node may answer `asker`'s peek: handoff is allowed here, and the
    /// asker is in this node's view or was never in any (a new member whose arrival
    /// this node has yet to see). A member seen before but not in the view now may be
    /// coming back, which this node has yet to notice.
    pub fn may_answer(&self, asker: &str) -> bool {
        if !self.handoff_allowed() {
            return false;
        }
        self.view.load().has(asker) || !self.history.lock().seen.contains(asker)
    }

    /// The previous owner of `key`, a member other than this node, to ask for its
    /// entry before loading: only within the handoff window after the change that made
    /// the current view, while asks keep finding entries and handoff is allowed, and
    /// only if that member is still in the view (a member that left or died has
    /// nothing to give).
    pub fn previous_owner(&self, key: &str) -> Option<PeerRef> {
        let view = self.view.load();
        let previous = view.previous.as_ref()?;
        if time::now().saturating_duration_since(view.since) >= self.handoff_window
            || self.handoff_misses.load(Relaxed) >= HANDOFF_MISSES_TO_STOP
            || !self.handoff_allowed()
        {
            return None;
        }
        let was = previous.owner(key)?;
        if was.id == self.self_id || view.ring.owner(key).is_none_or(|o| o.id == was.id) {
            return None;
        }
        view.peers.get(&was.id).map(|(_, p)| p.clone())
    }

    /// Notes whether an ask of a previous owner found an entry.
    pub fn note_handoff(&self, found: bool) {
        match found {
            true => self.handoff_misses.store(0, Relaxed),
            false => drop(self.handoff_misses.fetch_add(1, Relaxed)),
        }
    }

    /// Turns handoff off for the window if a member of `members` comes back: one seen
    /// in an earlier view, not in `old`.
    fn note_returns(&self, old: &View, members: &[Member]) {
        let mut history = self.history.lock();
        let back = (members.iter())
            .find(|m| !old.has(&m.id) && history.seen.contains(&m.id))
            .map(|m| m.id.clone());
        if let Some(id) = back {
            tracing::info!(member = %id, window = ?self.handoff_window, "a member came back; no handoff for the window");
            history.off_until = Some(time::now() + self.handoff_window);
        }
        history.seen.extend(members.iter().map(|m| m.id.clone()));
    }

    /// The ring as it will be without this node: where its keys go when it leaves.
    pub fn ring_without_self(&self) -> Ring {
        let view = self.view.load();
        let others = (view.ring.members().iter()).filter(|m| m.id != self.self_id);
        Ring::new(others.cloned(), self.vnodes)
    }

    /// This node's member id.
    pub fn self_id(&self) -> &str {
        &self.self_id
    }

    /// Who owns `key` in the current view.
    pub fn pick(&self, key: &str) -> Pick {
        let view = self.view.load();
        match view.ring.owner(key) {
            Some(owner) if owner.id != self.self_id => match view.peers.get(&owner.id) {
                Some((_, peer)) => Pick::Peer(peer.clone()),
                None => Pick::Local,
            },
            _ => Pick::Local,
        }
    }

    /// Whether this node owns `key` in the current view, as [`PeerPicker::pick`] would
    /// say `Local`, without cloning a peer or allocating: it runs on every main-cache hit.
    /// One exception: with no ring yet (a node that has not joined), `pick` says `Local`
    /// but this says no. Owners in the other nodes' views do not send it invalidations,
    /// so what it loads meanwhile, for a peer whose view still names it, must not stay
    /// in its main cache past the hot TTL and be served once it joins.
    pub fn owns(&self, key: &str) -> bool {
        let view = self.view.load();
        view.ring.owner_index(key).is_some_and(|i| view.local[i])
    }

    /// Who answers a get of `key` while its owner `failed` is unreachable: the member
    /// that would own the key if `failed` and the members suspected now left the
    /// membership (the next one clockwise on the ring), so every asker sends it to the
    /// same place and it is loaded there once rather than on each of them. `None` when
    /// that is this node.
    pub fn failover(&self, key: &str, failed: &str) -> Option<PeerRef> {
        let view = self.view.load();
        let members = view.ring.members().len();
        for member in view.ring.successors(key, members) {
            if member.id == failed {
                continue;
            }
            match view.peers.get(&member.id) {
                Some((_, peer)) if peer.suspected_for().is_some() => continue,
                Some((_, peer)) => return Some(peer.clone()),
                None => return None,
            }
        }
        None
    }

    /// The peer of member `id`, if it is in the current view.
    pub fn peer(&self, id: &str) -> Option<PeerRef> {
        self.view.load().peers.get(id).map(|(_, p)| p.clone())
    }

    /// Members suspected of being unreachable, with how much longer, in id order.
    pub fn suspected(&self) -> Vec<(String, std::time::Duration)> {
        let view = self.view.load();
        (view.peers.iter())
            .filter_map(|(id, (_, p))| Some((id.clone(), p.suspected_for()?)))
            .collect()
    }

    /// The peers of every other member, in id order.
    pub fn others(&self) -> Vec<PeerRef> {
        self.view().peers.values().map(|(_, p)| p.clone()).collect()
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        self.view.load_full()
    }

    /// Replaces the membership; returns the peers of members that were not in the
    /// previous view. Peers of members whose address is unchanged are kept (with their
    /// connections); members whose peer cannot be made are left out of the ring and
    /// logged.
    pub fn set_members(&self, members: Vec<Member>) -> Vec<PeerRef> {
        let old = self.view();
        let mut peers = BTreeMap::new();
        let mut ring_members = Vec::with_capacity(members.len());
        for m in members {
            if m.id != self.self_id {
                let kept = old.peers.get(&m.id).filter(|(was, _)| was.addr == m.addr);
                let peer = match kept {
                    Some((_, p)) => p.clone(),
                    None => match (self.connect)(&m) {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::warn!(member = %m.id, error = %e, "cannot reach member; left out of the ring");
                            continue;
                        }
                    },
                };
                peers.insert(m.id.clone(), (m.clone(), peer));
            }
            ring_members.push(m);
        }
        let added = peers
            .iter()
            .filter(|(id, _)| !old.has(id))
            .map(|(_, (_, p))| p.clone())
            .collect();
        // The previous owners of keys: the old ring, or for a node new to the ring
        // (joining, or rejoining after it lost its place) the new ring without it.
        let previous = match old.has(&self.self_id) {
            true => Ring::new(old.ring.members().iter().cloned(), self.vnodes),
            false => Ring::new(
                (ring_members.iter())
                    .filter(|m| m.id != self.self_id)
                    .cloned(),
                self.vnodes,
            ),
        };
        self.note_returns(&old, &ring_members);
        let ring = Ring::new(ring_members, self.vnodes);
        let view = View::new(ring, peers, &self.self_id, Some(previous));
        tracing::info!(members = view.ring.members().len(), "membership changed");
        self.view.store(Arc::new(view));
        self.handoff_misses.store(0, Relaxed);
        added
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::*;
    use crate::peer::{Fetched, PeerClient, PeerFailure};

    /// A peer that is never called here: the picker only hands it out.
    #[derive(Debug)]
    struct Idle(String);

    #[async_trait]
    impl PeerClient for Idle {
        fn id(&self) -> &str {
            &self.0
        }
        async fn get(&self, _: &str, _: &str, _: Duration) -> Result<Fetched, PeerFailure> {
            unreachable!("the picker makes no calls")
        }
        async fn set(
            &self,
            _: &str,
            _: &str,
            _: Bytes,
            _: Option<Duration>,
            _: Duration,
        ) -> Result<u64, PeerFailure> {
            unreachable!("the picker makes no calls")
        }
        async fn remove(&self, _: &str, _: &str, _: Duration) -> Result<u64, PeerFailure> {
            unreachable!("the picker makes no calls")
        }
        async fn invalidate(
            &self,
            _: &str,
            _: &str,
            _: u64,
            _: Duration,
        ) -> Result<(), PeerFailure> {
            unreachable!("the picker makes no calls")
        }
        async fn peek(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: Duration,
        ) -> Result<Option<Fetched>, PeerFailure> {
            unreachable!("the picker makes no calls")
        }
        async fn push(
            &self,
            _: &str,
            _: Vec<(String, Fetched)>,
            _: Duration,
        ) -> Result<usize, PeerFailure> {
            unreachable!("the picker makes no calls")
        }
    }

    /// A picker for `me` that counts the peers it makes; addresses without a port are
    /// refused, as a real connector refuses what it cannot dial.
    fn picker(me: &str) -> (PeerPicker, Arc<AtomicUsize>) {
        let made = Arc::new(AtomicUsize::new(0));
        let counter = made.clone();
        let connect: Connect = Box::new(move |m: &Member| {
            if !m.addr.contains(':') {
                return Err(crate::error::Error::Config(format!(
                    "bad address {}",
                    m.addr
                )));
            }
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(Arc::new(Idle(m.id.clone())) as PeerRef)
        });
        (PeerPicker::new(me, 64, connect), made)
    }

    fn members(ids: &[&str]) -> Vec<Member> {
        ids.iter()
            .map(|id| Member::new(*id, format!("{id}:7000")))
            .collect()
    }

    fn ids(peers: &[PeerRef]) -> Vec<&str> {
        peers.iter().map(|p| p.id()).collect()
    }

    #[test]
    fn owns_nothing_until_it_knows_members() {
        let (p, _) = picker("a");
        assert!(!p.owns("any key"));
        assert!(matches!(p.pick("any key"), Pick::Local));
        assert!(p.others().is_empty());
    }

    #[test]
    fn picks_the_rings_owner_and_keeps_peers_across_changes() {
        let (p, made) = picker("a");
        let added = p.set_members(members(&["a", "b", "c"]));
        assert_eq!(ids(&added), ["b", "c"]);
        assert_eq!(made.load(Ordering::SeqCst), 2, "a peer per other member");
        assert_eq!(ids(&p.others()), ["b", "c"]);
        let view = p.view();
        for key in (0..200).map(|i| format!("k{i}")) {
            let owner = &view.ring.owner(&key).unwrap().id;
            match p.pick(&key) {
                Pick::Local => assert!(owner == "a" && p.owns(&key)),
                Pick::Peer(peer) => assert!(peer.id() == owner && !p.owns(&key)),
            }
        }
        // c leaves, d joins, b moves: only d and the moved b get new peers.
        let mut next = members(&["a", "b", "d"]);
        next[1].addr = "b:7001".into();
        assert_eq!(ids(&p.set_members(next)), ["d"], "b was a member already");
        assert_eq!(made.load(Ordering::SeqCst), 4);
        assert!(p.set_members(members(&["a", "d"])).is_empty());
        assert_eq!(made.load(Ordering::SeqCst), 4, "d's peer kept");
        assert_eq!(p.view().ring.members().len(), 2);
    }

    #[test]
    fn a_member_without_a_peer_stays_out_of_the_ring() {
        let (p, _) = picker("a");
        let mut list = members(&["a", "b"]);
        list[1].addr = "not an address".into();
        p.set_members(list);
        assert_eq!(p.view().ring.members().len(), 1);
        assert!(p.owns("k"));
    }
}
