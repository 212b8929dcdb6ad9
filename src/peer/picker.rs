//! The peer picker: the ring over the current members and a client per peer, swapped
//! as one immutable [`View`] whenever membership changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::PeerClient;
use crate::ring::{Member, Ring};

/// Makes the client of a newly seen member.
pub type Connect = Box<dyn Fn(&Member) -> crate::Result<PeerClient> + Send + Sync>;

/// Membership as one node sees it at one moment.
pub struct View {
    /// The ring over the members.
    pub ring: Ring,
    /// A client per member other than this node, by member id.
    clients: BTreeMap<String, (Member, PeerClient)>,
}

/// Who serves a key.
#[derive(Debug)]
pub enum Pick {
    /// This node owns the key (or knows no members yet).
    Local,
    /// Another member owns it.
    Peer(PeerClient),
}

/// Maps keys to owners; shared by every group of a node.
pub struct PeerPicker {
    self_id: String,
    vnodes: u32,
    connect: Connect,
    /// Read on every hit (ownership check), so lock-free: readers never write a
    /// shared cache line.
    view: ArcSwap<View>,
}

impl PeerPicker {
    /// A picker for the node `self_id`, knowing no members yet.
    pub fn new(self_id: impl Into<String>, vnodes: u32, connect: Connect) -> Self {
        PeerPicker {
            self_id: self_id.into(),
            vnodes,
            connect,
            view: ArcSwap::from_pointee(View {
                ring: Ring::new([], vnodes),
                clients: BTreeMap::new(),
            }),
        }
    }

    /// This node's member id.
    pub fn self_id(&self) -> &str {
        &self.self_id
    }

    /// Who owns `key` in the current view.
    pub fn pick(&self, key: &str) -> Pick {
        let view = self.view.load();
        match view.ring.owner(key) {
            Some(owner) if owner.id != self.self_id => match view.clients.get(&owner.id) {
                Some((_, client)) => Pick::Peer(client.clone()),
                None => Pick::Local,
            },
            _ => Pick::Local,
        }
    }

    /// Whether this node owns `key` in the current view, as [`PeerPicker::pick`] would
    /// say `Local`, without cloning a client: it runs on every main-cache hit.
    pub fn owns(&self, key: &str) -> bool {
        let view = self.view.load();
        match view.ring.owner(key) {
            Some(owner) => owner.id == self.self_id || !view.clients.contains_key(&owner.id),
            None => true,
        }
    }

    /// Clients of every other member, in id order.
    pub fn others(&self) -> Vec<PeerClient> {
        self.view()
            .clients
            .values()
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        self.view.load_full()
    }

    /// Replaces the membership. Clients of members whose address is unchanged are kept
    /// (with their connections); members whose client cannot be made are left out of the
    /// ring and logged.
    pub fn set_members(&self, members: Vec<Member>) {
        let old = self.view();
        let mut clients = BTreeMap::new();
        let mut ring_members = Vec::with_capacity(members.len());
        for m in members {
            if m.id != self.self_id {
                let kept = old.clients.get(&m.id).filter(|(was, _)| was.addr == m.addr);
                let client = match kept {
                    Some((_, c)) => c.clone(),
                    None => match (self.connect)(&m) {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(member = %m.id, error = %e, "cannot reach member; left out of the ring");
                            continue;
                        }
                    },
                };
                clients.insert(m.id.clone(), (m.clone(), client));
            }
            ring_members.push(m);
        }
        let view = View {
            ring: Ring::new(ring_members, self.vnodes),
            clients,
        };
        tracing::info!(members = view.ring.members().len(), "membership changed");
        self.view.store(Arc::new(view));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::metrics::Metrics;

    /// A picker for `me` that counts the clients it makes (lazy channels: nothing dials).
    fn picker(me: &str) -> (PeerPicker, Arc<AtomicUsize>) {
        let made = Arc::new(AtomicUsize::new(0));
        let counter = made.clone();
        let metrics = Arc::new(Metrics::new(crate::Registry::new(Arc::new(
            crate::TokioClock::new(),
        ))));
        let connect: Connect = Box::new(move |m: &Member| {
            counter.fetch_add(1, Ordering::SeqCst);
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", m.addr))
                .map_err(|e| crate::Error::Config(e.to_string()))?
                .connect_lazy();
            Ok(PeerClient::new(m.id.as_str(), channel, metrics.clone()))
        });
        (PeerPicker::new(me, 64, connect), made)
    }

    fn members(ids: &[&str]) -> Vec<Member> {
        ids.iter()
            .map(|id| Member::new(*id, format!("{id}:7000")))
            .collect()
    }

    #[tokio::test]
    async fn owns_everything_until_it_knows_members() {
        let (p, _) = picker("a");
        assert!(p.owns("any key"));
        assert!(p.others().is_empty());
    }

    #[tokio::test]
    async fn picks_the_rings_owner_and_keeps_clients_across_changes() {
        let (p, made) = picker("a");
        p.set_members(members(&["a", "b", "c"]));
        assert_eq!(made.load(Ordering::SeqCst), 2, "a client per other member");
        let ids: Vec<String> = p.others().iter().map(|c| c.id().to_owned()).collect();
        assert_eq!(ids, ["b", "c"]);
        let view = p.view();
        for key in (0..200).map(|i| format!("k{i}")) {
            let owner = &view.ring.owner(&key).unwrap().id;
            match p.pick(&key) {
                Pick::Local => assert!(owner == "a" && p.owns(&key)),
                Pick::Peer(c) => assert!(c.id() == owner && !p.owns(&key)),
            }
        }
        // c leaves, d joins, b moves: only d and the moved b get new clients.
        let mut next = members(&["a", "b", "d"]);
        next[1].addr = "b:7001".into();
        p.set_members(next);
        assert_eq!(made.load(Ordering::SeqCst), 4);
        p.set_members(members(&["a", "d"]));
        assert_eq!(made.load(Ordering::SeqCst), 4, "d's client kept");
        assert_eq!(p.view().ring.members().len(), 2);
    }

    #[tokio::test]
    async fn a_member_without_a_client_stays_out_of_the_ring() {
        let (p, _) = picker("a");
        let mut list = members(&["a", "b"]);
        list[1].addr = "not an address".into();
        p.set_members(list);
        assert_eq!(p.view().ring.members().len(), 1);
        assert!(p.owns("k"));
    }
}
