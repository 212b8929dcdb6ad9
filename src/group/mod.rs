//! A group: a named cache namespace with its own stores, limits, TTL and loader.
//!
//! The read path, top to bottom in this file:
//!
//! ```text
//!  get(key) ── check key ──► main cache ── hit (and still owned) ───────────────► value
//!                                │ miss
//!                            hot cache ── hit (a copy of a peer's key) ──────────► value
//!                                │ miss
//!                   PeerPicker: who owns the key?
//!          self ───────────────┐                  peer P
//!                              │                    │ fetch flight(key): one call per
//!                              │                    │ key, however many gets wait on it
//!                              │                    │ PeerClient::get(P, time left)
//!                              │                    │   ok ─► maybe keep a hot copy ─► value
//!                              │                    │   P's own error ─► returned as is
//!                              │                    │   P unreachable ─► count; ask N, the
//!                              │                    │   member that would own the key
//!                              │                    │   without P (a relayed get: N asks P
//!                              │                    │   once if N reaches it) ─► value;
//!                              │                    │   N is this node or unreachable too:
//!                              ▼                    ▼   load here (kept briefly, hot cache)
//!                   load flight(key) (fill.rs) ◄── also where a peer's get starts
//!                              │                    (`get_for_peer`): never forwarded,
//!                              │                    but for a relayed get, once, to P
//!          version = store floor(key)        (newest write seen so far)
//!          Loader::load(key) ── error ─► counted, returned, never cached
//!                              │ ok
//!          insert at `version` ── refused if a Set/Remove came meanwhile
//! ```
//!
//! `set` and `remove` go to the owner (writes.rs), which stamps a version above every
//! version seen for the key, applies the write, and tells every other member to drop
//! older copies (`invalidate`). A fill that started before a write is refused by the
//! store when it completes, on every node, since copies carry the owner's version;
//! writes also detach the key's flights, so a get issued after a write never receives
//! an older fill. Copies of other members' keys live in hot.rs; counters in stats.rs.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use tokio_util::task::TaskTracker;

use crate::buggify::{self, Bug, CallLog, Point};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::loader::Loader;
use crate::peer::{Fetched, PeerFailure, PeerPicker, PeerRef, Pick};
use crate::singleflight::{Role, SingleFlight};
use crate::store::{Hit, Store};
use crate::time::{self, Epoch, Instant};

mod builder;
mod compressed;
mod decoded;
mod fill;
mod handoff;
pub mod hot;
mod hotkeys;
mod registry;
mod stats;
mod stores;
mod writes;

pub use builder::{GroupBuilder, PolicyKind};
pub use compressed::{Compression, DEFAULT_COMPRESS_MIN};
pub use hot::HotConfig;
pub use hotkeys::{HotKey, HotKeyConfig};
pub use registry::Registry;
pub use stats::{Counter, GroupStats, StoreField};

/// Time allowed for a peer call when the group sets no request timeout.
const DEFAULT_PEER_DEADLINE: Duration = Duration::from_secs(5);

/// Where a node's groups find the peer picker once the node has one.
pub(crate) type PeerSlot = Arc<OnceLock<Arc<PeerPicker>>>;

/// A named cache namespace. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Group {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    limits: builder::Limits,
    /// Keys this node owns.
    main: Box<dyn Store>,
    /// Copies of keys other members own.
    hot: hot::Hot,
    /// Entries in transit between owners after a membership change.
    handoff: handoff::Handoff,
    /// Which of the keys peers ask this node for are hot.
    hot_keys: hotkeys::Detector,
    /// Keys the loader lacked lately, with a negative TTL.
    negatives: Option<fill::Negatives>,
    loader: Arc<dyn Loader>,
    /// Calls to owners, one per key.
    fetches: SingleFlight<Result<Answer>>,
    /// Loads from this node's loader, shared by client gets and peers' requests.
    loads: SingleFlight<Result<Fetched>>,
    ttl: fill::Ttl,
    writes: writes::Writes,
    peers: PeerSlot,
    epoch: Epoch,
    timeout: Option<Duration>,
    /// TTL jitter and hot-copy sampling, seeded per group.
    rng: Mutex<SmallRng>,
    /// Compression of values answered to peers, with `--compress-wire-only` (else
    /// values are kept compressed, in `main` and `hot`).
    wire: Option<Compression>,
    counters: Arc<stats::Counters>,
    /// Invalidation fan-outs, which outlive the write that started them; the node
    /// waits for them at shutdown.
    tasks: TaskTracker,
}

/// How long a relayed get waits for the key's owner before answering with a load here
/// (see [`Group::get_relayed_for_peer`]): the least that counts as evidence for a
/// suspicion.
const RELAY_WAIT: Duration = crate::peer::MIN_EVIDENCE;

/// An owner's answer to a fetch: the value, and the bytes as they came when the owner
/// sent them compressed.
#[derive(Clone)]
struct Answer {
    value: Bytes,
    packed: Option<(Codec, Bytes)>,
}

impl Answer {
    fn raw(value: Bytes) -> Self {
        Answer {
            value,
            packed: None,
        }
    }

    /// The value for a reader that decodes the codecs of `accept`.
    fn read_as(self, accept: &[Codec]) -> (Bytes, Codec) {
        match self.packed {
            Some((codec, bytes)) if codec.accepted_by(accept) => (bytes, codec),
            _ => (self.value, Codec::Identity),
        }
    }
}

impl Group {
    /// Returns the value of `key`: from this node's caches, from the key's owner, or
    /// through the loader when this node owns the key (or the owner is unreachable).
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        Ok(self.get_as(key, &[]).await?.0)
    }

    /// [`Self::get`] for a reader that decodes the codecs of `accept` (an HTTP client's
    /// `Accept-Encoding`): a value this node keeps compressed in one of them, or that
    /// its owner sent so, is answered as it is, in the codec returned; any other
    /// decompressed ([`Codec::Identity`]).
    pub async fn get_as(&self, key: &str, accept: &[Codec]) -> Result<(Bytes, Codec)> {
        let inner = &*self.inner;
        inner.counters.gets.fetch_add(1, Relaxed);
        inner.limits.check_key(key)?;
        if let Some(found) = self.cached_as(key, accept) {
            return Ok(found);
        }
        let deadline = self.deadline();
        let get = async {
            let peer = match self.pick(key) {
                Pick::Local => {
                    return self
                        .load(key, true)
                        .await
                        .map(|f| (f.value, Codec::Identity));
                }
                Pick::Peer(peer) => peer,
            };
            let ask = || self.fetch(&peer, key, deadline);
            let answer = match buggify::planted(Bug::CallPerGet) {
                true => ask().await,
                false => {
                    let (result, role) = inner.fetches.run(key, ask).await;
                    if role == Role::Follower {
                        inner.counters.loads_deduped.fetch_add(1, Relaxed);
                    }
                    result
                }
            };
            answer.map(|a| a.read_as(accept))
        };
        time::until(deadline, get).await?
    }

    /// The values of `keys`, in order, each as [`Self::get`] answers it (a key that
    /// fails does not fail the others). The gets of keys one peer owns are sent to it
    /// together, as one call (src/grpc/batch.rs), and each key shares the flights of
    /// concurrent single gets.
    pub async fn get_many<K: AsRef<str>>(&self, keys: &[K]) -> Vec<Result<Bytes>> {
        futures::future::join_all(keys.iter().map(|key| self.get(key.as_ref()))).await
    }

    /// What [`Self::get`] answers if this node holds `key` (main or hot cache), counted
    /// as that get; `None` (nothing counted) if it would have to load or ask the owner,
    /// or the key is refused. For callers with many gets at once (a pipeline), so hits
    /// are answered without a future each.
    pub fn get_if_cached(&self, key: &str) -> Option<Bytes> {
        let inner = &*self.inner;
        inner.limits.check_key(key).ok()?;
        let value = self.cached(key)?;
        inner.counters.gets.fetch_add(1, Relaxed);
        Some(value)
    }

    /// Stores `value` under `key` with `ttl` (or the group default) through the key's
    /// owner, at a new version, which it returns. In-flight fills of the key, here or
    /// anywhere, will not overwrite it.
    pub async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64> {
        self.inner.limits.check_key(key)?;
        self.inner.limits.check_value(&value)?;
        self.write(key, Some(value), ttl).await
    }

    /// Drops `key` through its owner at a new version, which it returns. In-flight fills
    /// of the key will not bring the old value back.
    pub async fn remove(&self, key: &str) -> Result<u64> {
        self.inner.limits.check_key(key)?;
        self.write(key, None, None).await
    }

    /// Answers a peer's get: this node is the owner in the peer's view. Never forwarded:
    /// if this node disagrees about ownership it loads locally and keeps the value only
    /// briefly.
    pub async fn get_for_peer(&self, key: &str, deadline: Duration) -> Result<Fetched> {
        Ok(self.serve_peer(key, deadline, false, &[]).await?.0)
    }

    /// Answers a peer that could not reach the key's owner and asks this node, the
    /// member that would own the key without it ([`PeerClient::get_relayed`]): if this
    /// node does not own the key but trusts its owner, it answers with its copy or asks
    /// the owner (once, a plain get); else as [`Self::get_for_peer`].
    ///
    /// [`PeerClient::get_relayed`]: crate::peer::PeerClient::get_relayed
    pub async fn get_relayed_for_peer(&self, key: &str, deadline: Duration) -> Result<Fetched> {
        Ok(self.serve_peer(key, deadline, true, &[]).await?.0)
    }

    /// [`Self::get_for_peer`] (or, with `relay`, [`Self::get_relayed_for_peer`]) for a
    /// peer that decodes the codecs of `accept`: a value this node keeps compressed in
    /// one of them is answered as it is kept, in the codec returned, not decompressed;
    /// with `--compress-wire-only`, one long enough is compressed for it.
    pub async fn serve_peer(
        &self,
        key: &str,
        deadline: Duration,
        relay: bool,
        accept: &[Codec],
    ) -> Result<(Fetched, Codec)> {
        let (fetched, codec) = self.answer_peer(key, deadline, relay, accept).await?;
        Ok(self.for_wire(fetched, codec, accept))
    }

    /// `fetched`, whose value is in `codec`, as sent to a peer that decodes the codecs
    /// of `accept`: with `--compress-wire-only`, a value as it is compressed for it
    /// when long enough.
    pub(super) fn for_wire(
        &self,
        mut fetched: Fetched,
        codec: Codec,
        accept: &[Codec],
    ) -> (Fetched, Codec) {
        let wire = (self.inner.wire)
            .filter(|how| codec == Codec::Identity && how.codec.accepted_by(accept));
        if let Some(how) = wire
            && let Some(packed) = how.encode(&fetched.value, &self.inner.counters)
        {
            fetched.value = Bytes::from(packed);
            return (fetched, how.codec);
        }
        (fetched, codec)
    }

    /// [`Self::serve_peer`] without compression for the wire.
    async fn answer_peer(
        &self,
        key: &str,
        deadline: Duration,
        relay: bool,
        accept: &[Codec],
    ) -> Result<(Fetched, Codec)> {
        let inner = &*self.inner;
        inner.counters.served_to_peers.fetch_add(1, Relaxed);
        inner.limits.check_key(key)?;
        let now = inner.epoch.now();
        let hot = inner.hot_keys.record(key, now);
        if let Some((hit, codec)) = self.main_hit_as(key, now, accept) {
            let fetched = Fetched {
                hot,
                ..self.fetched(hit)
            };
            return Ok((fetched, codec));
        }
        let owned = self.owns(key);
        let raw = |fetched: Fetched| Ok((Fetched { hot, ..fetched }, Codec::Identity));
        // A key this node will own once a leaving member is gone from its view, pushed
        // here already: the asker's view is ahead of ours.
        if !owned && let Some(handed) = self.handed_copy(key) {
            return raw(handed);
        }
        let at = time::now() + deadline;
        if relay
            && !owned
            && let Some(relayed) = self.relay(key, at).await?
        {
            return raw(relayed);
        }
        raw(time::until(Some(at), self.load(key, owned)).await??)
    }

    /// For a peer that could not reach the owner of `key` in this node's view: this
    /// node's copy, or the owner's answer when this node trusts it; `None` to answer
    /// here instead (the owner is suspected, unreachable or lacks the group).
    async fn relay(&self, key: &str, deadline: Instant) -> Result<Option<Fetched>> {
        let Pick::Peer(owner) = self.pick(key) else {
            return Ok(None);
        };
        if owner.suspected_for().is_some() {
            return Ok(None);
        }
        let inner = &*self.inner;
        if let Some(hit) = inner.hot.get(key, inner.epoch.now()) {
            return Ok(Some(self.fetched(hit)));
        }
        // Read before asking, as for a fetch of our own.
        let hot_floor = inner.hot.floor(key);
        // The asker found the owner unresponsive: wait for it only briefly. Long enough
        // that no answer makes this node suspect the owner too, so the next relayed
        // gets of its keys do not wait.
        let wait = time_left(Some(deadline)).min(RELAY_WAIT);
        match owner.get(&inner.name, key, wait).await {
            Ok(fetched) => {
                inner.counters.relayed_gets.fetch_add(1, Relaxed);
                self.keep_copy(key, &fetched, hot_floor);
                Ok(Some(fetched))
            }
            Err(PeerFailure::Answered(Error::UnknownGroup(_))) => Ok(None),
            Err(PeerFailure::Answered(e)) => Err(e),
            Err(PeerFailure::Unreachable(why)) => {
                inner.counters.peer_errors.fetch_add(1, Relaxed);
                tracing::debug!(group = %inner.name, peer = owner.id(), %why, "owner unreachable from here too; loading locally");
                Ok(None)
            }
        }
    }

    /// The keys peers ask this node for most, hot now (see [`HotKeyConfig`]), hottest
    /// first.
    pub fn hot_keys(&self) -> Vec<HotKey> {
        self.inner.hot_keys.hot(self.inner.epoch.now())
    }

    /// A hit in the main or the hot cache.
    fn cached(&self, key: &str) -> Option<Bytes> {
        Some(self.cached_as(key, &[])?.0)
    }

    /// [`Self::cached`], its bytes as kept when that is in a codec of `accept`.
    fn cached_as(&self, key: &str, accept: &[Codec]) -> Option<(Bytes, Codec)> {
        let inner = &*self.inner;
        let now = inner.epoch.now();
        let (hit, codec) = match self.main_hit_as(key, now, accept) {
            Some(found) => found,
            None => {
                let found = inner.hot.store()?.get_as(key, now, accept)?;
                inner.counters.hot_hits.fetch_add(1, Relaxed);
                found
            }
        };
        inner.counters.hits.fetch_add(1, Relaxed);
        Some((hit.value, codec))
    }

    /// A main-cache entry is served only while this node owns its key. After membership
    /// moved the key elsewhere it is dropped: the new owner may take writes this node
    /// never hears of. Its bytes are as kept when that is in a codec of `accept`, else
    /// decompressed (in the codec returned).
    fn main_hit_as(&self, key: &str, now: Duration, accept: &[Codec]) -> Option<(Hit, Codec)> {
        let main = &self.inner.main;
        let (hit, codec) = main.get_as(key, now, accept)?;
        if self.owns(key) || buggify::planted(Bug::KeepsUnowned) {
            return Some((hit, codec));
        }
        main.remove(key, hit.version.saturating_add(1));
        None
    }

    /// Asks `peer`, the key's owner, for `key`: the leader's half of a fetch flight.
    async fn fetch(&self, peer: &PeerRef, key: &str, deadline: Option<Instant>) -> Result<Answer> {
        let inner = &*self.inner;
        if let Some(value) = self.cached(key) {
            return Ok(Answer::raw(value));
        }
        // Read before asking: an invalidation from here on refuses the copy we get back.
        let hot_floor = inner.hot.floor(key);
        let log = CallLog::start(self.picker().map_or("", |p| p.self_id()), peer.id(), key);
        let answer = peer.get(&inner.name, key, time_left(deadline)).await;
        drop(log);
        let why = match answer {
            Ok(fetched) => return Ok(self.received(key, fetched, hot_floor).await),
            // An owner that lacks the group (a rolling deploy) cannot serve it either.
            Err(PeerFailure::Answered(Error::UnknownGroup(_))) => {
                inner.counters.peer_errors.fetch_add(1, Relaxed);
                return self.load(key, false).await.map(|f| Answer::raw(f.value));
            }
            Err(PeerFailure::Answered(e)) => return Err(e),
            Err(PeerFailure::Unreachable(why)) => why,
        };
        inner.counters.peer_errors.fetch_add(1, Relaxed);
        if deadline.is_some_and(|at| time::now() >= at) {
            return Err(Error::Timeout);
        }
        // A suspected owner was logged once when the suspicion began; each get
        // refused meanwhile is not worth a line.
        if peer.suspected_for().is_some() {
            tracing::debug!(group = %inner.name, peer = peer.id(), %why, "owner suspected; asking the next member");
        } else {
            tracing::warn!(group = %inner.name, peer = peer.id(), %why, "owner unreachable; asking the next member");
        }
        let failover = self.picker().and_then(|p| p.failover(key, peer.id()));
        if let Some(next) = failover {
            match next
                .get_relayed(&inner.name, key, time_left(deadline))
                .await
            {
                Ok(fetched) => {
                    inner.counters.failover_gets.fetch_add(1, Relaxed);
                    return Ok(self.received(key, fetched, hot_floor).await);
                }
                Err(PeerFailure::Answered(Error::UnknownGroup(_))) => {}
                Err(PeerFailure::Answered(e)) => return Err(e),
                Err(PeerFailure::Unreachable(why)) => {
                    tracing::debug!(group = %inner.name, peer = next.id(), %why, "next member unreachable too; loading locally");
                }
            }
            inner.counters.peer_errors.fetch_add(1, Relaxed);
            if deadline.is_some_and(|at| time::now() >= at) {
                return Err(Error::Timeout);
            }
        }
        self.load(key, false).await.map(|f| Answer::raw(f.value))
    }

    /// A value a peer answered for `key`, kept as a hot copy if it deserves one;
    /// `hot_floor` is the copy's floor read before asking.
    async fn received(&self, key: &str, fetched: Fetched, mut hot_floor: Option<u64>) -> Answer {
        let inner = &*self.inner;
        inner.counters.peer_loads.fetch_add(1, Relaxed);
        buggify::delay(Point::BeforeKeepHot).await;
        if buggify::planted(Bug::HotIgnoresInvalidation) {
            // The floor as it is now, raised by any invalidation meanwhile: the
            // copy passes the store's check.
            hot_floor = inner.hot.floor(key);
        }
        if self.keep_copy(key, &fetched, hot_floor) && fetched.hot {
            inner.counters.hot_flagged.fetch_add(1, Relaxed);
        }
        Answer {
            value: fetched.value,
            packed: fetched.packed,
        }
    }

    /// Keeps `fetched` as a hot copy of `key` if it deserves one (hot.rs); `hot_floor`
    /// is the copy's floor read before asking, `None` without a hot cache. Returns
    /// whether there is a hot cache.
    fn keep_copy(&self, key: &str, fetched: &Fetched, hot_floor: Option<u64>) -> bool {
        let inner = &*self.inner;
        let Some(floor) = hot_floor else {
            return false;
        };
        inner
            .hot
            .keep(key, fetched, floor, inner.epoch.now(), &inner.rng);
        true
    }

    /// Who owns `key` in this node's current view (this node, without peers).
    fn pick(&self, key: &str) -> Pick {
        if buggify::planted(Bug::LoadsUnowned) {
            return Pick::Local;
        }
        self.picker().map_or(Pick::Local, |p| p.pick(key))
    }

    /// Whether this node owns `key` in its current view (always, without peers).
    fn owns(&self, key: &str) -> bool {
        self.picker().is_none_or(|p| p.owns(key))
    }

    fn picker(&self) -> Option<&Arc<PeerPicker>> {
        self.inner.peers.get()
    }

    /// The absolute deadline of a request starting now, if the group has a timeout.
    fn deadline(&self) -> Option<Instant> {
        Some(time::now() + self.inner.timeout?)
    }
}

/// Time left until `deadline`, or the default peer deadline when there is none.
fn time_left(deadline: Option<Instant>) -> Duration {
    deadline.map_or(DEFAULT_PEER_DEADLINE, |at| {
        at.saturating_duration_since(time::now())
    })
}

/// What a group is and holds, for operators: its name, limits and counters.
impl Group {
    /// The group's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Limits on key and value length, in bytes.
    pub fn limits(&self) -> (usize, usize) {
        (self.inner.limits.max_key, self.inner.limits.max_value)
    }

    /// The group's counters and its stores'.
    pub fn stats(&self) -> GroupStats {
        let inner = &*self.inner;
        inner.counters.read(inner.main.stats(), inner.hot.stats())
    }

    /// Whether this node holds `key` in its main cache (it owns it, or did).
    pub fn holds(&self, key: &str) -> bool {
        // In any codec: presence needs no decompression.
        (self.inner.main)
            .get_as(key, self.inner.epoch.now(), &Codec::ALL)
            .is_some()
    }

    /// Whether this node's main or hot cache holds `key`, and if so the time the entry
    /// has left (`None`: it never expires). Never loads and never asks the owner.
    pub fn cached_ttl(&self, key: &str) -> Option<Option<Duration>> {
        let inner = &*self.inner;
        let now = inner.epoch.now();
        // In any codec: the entry's lifetime needs no decompression.
        let (hit, _) = (inner.main.get_as(key, now, &Codec::ALL))
            .or_else(|| inner.hot.store()?.get_as(key, now, &Codec::ALL))?;
        Some(hit.expires_at().map(|at| at.saturating_sub(now)))
    }

    /// Drops expired entries now (a bounded amount of work); returns how many.
    pub fn sweep(&self) -> usize {
        let now = self.inner.epoch.now();
        let window = self.picker().map_or(Duration::ZERO, |p| p.handoff_window());
        let handoff = self.inner.handoff.sweep(now, window);
        self.inner.main.sweep(now) + self.inner.hot.sweep(now) + handoff
    }

    /// Drops this node's copies (the hot cache) of keys `member` owns in its view. Run
    /// when `member` answers again after being suspected: values loaded here meanwhile
    /// live up to the hot TTL, and its keys are read from it again from now on.
    pub fn drop_copies_of(&self, member: &str) -> usize {
        let (Some(picker), Some(hot)) = (self.picker(), self.inner.hot.store()) else {
            return 0;
        };
        let view = picker.view();
        hot.retain(&|key| view.ring.owner(key).is_none_or(|owner| owner.id != member))
    }

    /// Takes main-cache entries of keys this node no longer owns out of the main
    /// cache, after a membership change. Writes to such a key go to its new owner and
    /// may never reach this node, so a copy served here would be stale if the key came
    /// back (a node that rejoins after losing its lease, a joiner that leaves again).
    /// They wait in the handoff store for the handoff window, never served to clients,
    /// for the keys' new owners to ask for (handoff.rs). Returns how many left.
    pub fn drop_unowned(&self) -> usize {
        match self.picker() {
            Some(_) if buggify::planted(Bug::KeepsUnowned) => 0,
            Some(picker) => {
                if let Some(negatives) = &self.inner.negatives {
                    negatives.retain(&|key| picker.owns(key));
                }
                self.hand_off_unowned(&|key| picker.owns(key))
            }
            None => 0,
        }
    }
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}
