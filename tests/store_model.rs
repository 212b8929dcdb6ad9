//! Property tests: each store against a simple reference model over random operations.
//!
//! The model keeps entries in a Vec ordered by recency and applies the same rules as the
//! store (byte capacity, version floors, TTL, level promotion) the obvious slow way. Both
//! must agree on every hit, miss, value and eviction.

use std::time::Duration;

use bytes::Bytes;
use peercache::store::lru2::SECOND_CHANCES;
use peercache::store::{
    ENTRY_OVERHEAD, EXACT_FLOORS, Entry, Evicted, Lru, Lru2, Peek, Policy, Rejected, Stats,
    VERSION_FLOORS, entry_charge, key_hash,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// A lookup; `true` goes through `peek` first, as `Sharded` does.
    Get(u8, bool),
    Insert {
        key: u8,
        len: u16,
        ttl: Option<u8>,
        back: u8,
    },
    Remove(u8),
    Advance(u8),
    Sweep,
}

fn op(keys: u8, max_len: u16) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u8>(), any::<bool>()).prop_map(move |(k, peek)| Op::Get(k % keys, peek)),
        3 => (any::<u8>(), 0..max_len, proptest::option::of(1u8..20), 0u8..4).prop_map(
            move |(k, len, ttl, back)| Op::Insert { key: k % keys, len, ttl, back }
        ),
        1 => any::<u8>().prop_map(move |k| Op::Remove(k % keys)),
        1 => (1u8..10).prop_map(Op::Advance),
        1 => Just(Op::Sweep),
    ]
}

fn slot(key: &str) -> usize {
    key_hash(key) as usize % VERSION_FLOORS
}

fn key(k: u8) -> String {
    format!("k{k}")
}

#[derive(Debug, Clone)]
struct ModelEntry {
    key: String,
    value: Bytes,
    version: u64,
    expires: u64,
    level: usize,
    /// Its level's `Model::pushes` when the entry was last put at the front of it.
    stamp: u64,
    /// Read since it was last put at the front of a level.
    referenced: bool,
}

/// Reference model: `entries[0]` is the most recent; `level` 0 = probation, 1 = protected.
#[derive(Default)]
struct Model {
    entries: Vec<ModelEntry>,
    /// Floors by slot, as documented for `VERSION_FLOORS`: those of keys whose exact
    /// floor spilled.
    floors: std::collections::BTreeMap<usize, u64>,
    /// Exact floors of the last `EXACT_FLOORS` keys written or removed, oldest first.
    exact: std::collections::BTreeMap<String, u64>,
    exact_order: std::collections::VecDeque<String>,
    capacity: u64,
    /// None: plain LRU. Some(cap): LRU2 with that protected capacity.
    protected: Option<u64>,
    stats: Stats,
    /// Times an entry was put at the front of each level.
    pushes: [u64; 2],
    /// Keys evicted by the last insert, in order.
    evicted: Vec<String>,
}

impl Model {
    fn charge(e: &ModelEntry) -> u64 {
        entry_charge(&e.key, &e.value)
    }

    fn bytes(&self) -> u64 {
        self.entries.iter().map(Self::charge).sum()
    }

    fn level_bytes(&self, level: usize) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.level == level)
            .map(Self::charge)
            .sum()
    }

    fn pos(&self, key: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.key == key)
    }

    fn level_len(&self, level: usize) -> usize {
        self.entries.iter().filter(|e| e.level == level).count()
    }

    /// Puts entry `i` at the front of `level`; a no-op if it is already there.
    fn push_front(&mut self, i: usize, level: usize) {
        let first = self.entries.iter().position(|e| e.level == level);
        if self.entries[i].level == level && first == Some(i) {
            return;
        }
        let mut e = self.entries.remove(i);
        self.pushes[level] += 1;
        e.level = level;
        e.stamp = self.pushes[level];
        e.referenced = false;
        self.entries.insert(0, e);
    }

    /// The skip rule: an entry pushed fewer than len/4 pushes ago stays where it is.
    fn near_front(&self, i: usize) -> bool {
        let e = &self.entries[i];
        self.pushes[e.level] - e.stamp < self.level_len(e.level) as u64 / 4
    }

    /// Demotes protected entries, least recent first, while level 2 is over its share.
    fn fit_protected(&mut self) {
        let Some(cap) = self.protected else { return };
        // A referenced entry at the back gets a second chance, a bounded number per call.
        let mut chances = SECOND_CHANCES;
        while self.level_bytes(1) > cap && self.level_len(1) > 1 {
            let last = self.entries.iter().rposition(|e| e.level == 1).unwrap();
            if chances > 0 && self.entries[last].referenced {
                chances -= 1;
                self.push_front(last, 1);
            } else {
                self.push_front(last, 0);
            }
        }
    }

    fn get(&mut self, key: &str, now: u64) -> Option<Bytes> {
        let Some(i) = self.pos(key) else {
            self.stats.misses += 1;
            return None;
        };
        if self.entries[i].expires <= now {
            self.entries.remove(i);
            self.stats.expirations += 1;
            self.stats.misses += 1;
            return None;
        }
        self.stats.hits += 1;
        let value = self.entries[i].value.clone();
        match self.protected {
            None if !self.near_front(i) => self.push_front(i, 0),
            None => self.entries[i].referenced = true,
            Some(_) if self.entries[i].level == 1 => self.entries[i].referenced = true,
            Some(_) => {
                self.push_front(i, 1);
                self.fit_protected();
            }
        }
        Some(value)
    }

    fn insert(
        &mut self,
        key: &str,
        value: Bytes,
        version: u64,
        expires: u64,
    ) -> Result<(), Rejected> {
        if entry_charge(key, &value) > self.capacity {
            return Err(Rejected::TooLarge);
        }
        let floor = self.floor(key);
        if version < floor {
            self.stats.stale_rejections += 1;
            // A refused write still supersedes an older entry of its own key.
            self.entries
                .retain(|e| e.key != key || e.version >= version);
            return Err(Rejected::Stale);
        }
        if version > floor {
            self.raise(key, version);
        }
        let (level, update) = match self.pos(key) {
            Some(i) => (self.entries.remove(i).level, true),
            None => (0, false),
        };
        self.pushes[level] += 1;
        let entry = ModelEntry {
            key: key.to_owned(),
            value,
            version,
            expires,
            level,
            stamp: self.pushes[level],
            referenced: false,
        };
        self.entries.insert(0, entry);
        if update {
            self.fit_protected();
        }
        self.stats.inserts += 1;
        while self.bytes() > self.capacity {
            // Least recent of level 0 (other than the new entry), else of level 1.
            let victim = [0, 1]
                .into_iter()
                .find_map(|lvl| {
                    self.entries
                        .iter()
                        .rposition(|e| e.level == lvl && e.key != key)
                })
                .expect("something else to evict");
            let gone = self.entries.remove(victim);
            self.evicted.push(gone.key);
            self.stats.evictions += 1;
        }
        Ok(())
    }

    fn floor(&self, key: &str) -> u64 {
        let slot = self.floors.get(&slot(key)).copied().unwrap_or(0);
        self.exact.get(key).map_or(slot, |&v| v.max(slot))
    }

    fn raise(&mut self, key: &str, version: u64) {
        if let Some(v) = self.exact.get_mut(key) {
            *v = (*v).max(version);
            return;
        }
        self.exact.insert(key.to_owned(), version);
        self.exact_order.push_back(key.to_owned());
        if self.exact_order.len() > EXACT_FLOORS {
            let old = self.exact_order.pop_front().unwrap();
            let v = self.exact.remove(&old).unwrap();
            let floor = self.floors.entry(slot(&old)).or_insert(0);
            *floor = (*floor).max(v);
        }
    }

    fn remove(&mut self, key: &str, version: u64) -> bool {
        self.raise(key, version);
        match self.pos(key) {
            Some(i) if self.entries[i].version < version => {
                self.entries.remove(i);
                true
            }
            _ => false,
        }
    }

    fn sweep(&mut self, now: u64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|e| e.expires > now);
        let dropped = before - self.entries.len();
        self.stats.expirations += dropped as u64;
        dropped
    }
}

fn run_against_model<P: Policy>(
    mut store: P,
    mut model: Model,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let mut now: u64 = 1;
    let mut version = 0u64;
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Get(k, via_peek) => {
                let k = key(k);
                let hash = key_hash(&k);
                let peeked = if via_peek {
                    store.peek(hash, &k, now)
                } else {
                    Peek::NeedsWrite
                };
                let got = match peeked {
                    Peek::Hit(hit) => Some(hit.value),
                    Peek::Miss => None,
                    Peek::NeedsWrite => store.get(hash, &k, now, None).map(|h| h.value),
                };
                prop_assert_eq!(got, model.get(&k, now), "step {} get {}", step, k);
            }
            Op::Insert {
                key: k,
                len,
                ttl,
                back,
            } => {
                let k = key(k);
                version += 1;
                // Sometimes an older version arrives late, like a slow fill.
                let version = version.saturating_sub(u64::from(back));
                let value = Bytes::from(vec![step as u8; len as usize]);
                let expires_at = ttl.map(|t| Duration::from_nanos(now + u64::from(t)));
                model.evicted.clear();
                let want = model.insert(
                    &k,
                    value.clone(),
                    version,
                    expires_at.map_or(u64::MAX, |d| d.as_nanos() as u64),
                );
                let mut evicted = Vec::new();
                let got = store.insert(
                    key_hash(&k),
                    &k,
                    Entry {
                        value,
                        version,
                        expires_at,
                    },
                    Some(&mut evicted),
                );
                prop_assert_eq!(got, want, "step {} insert {}", step, k);
                let evicted: Vec<String> = evicted.iter().map(|e| e.key.to_string()).collect();
                prop_assert_eq!(&evicted, &model.evicted, "step {} victims", step);
            }
            Op::Remove(k) => {
                let k = key(k);
                version += 1;
                prop_assert_eq!(
                    store.remove(key_hash(&k), &k, version),
                    model.remove(&k, version)
                );
            }
            Op::Advance(d) => now += u64::from(d),
            Op::Sweep => {
                // A budget covering every slot makes one sweep complete, like the model's.
                prop_assert_eq!(store.sweep(now, 1 << 20, None), model.sweep(now));
            }
        }
        let mut stats = Stats::default();
        store.add_stats(&mut stats);
        prop_assert!(
            stats.bytes <= model.capacity,
            "bytes {} over capacity {}",
            stats.bytes,
            model.capacity
        );
        prop_assert_eq!(stats.bytes, model.bytes());
        prop_assert_eq!(stats.items as usize, model.entries.len());
        prop_assert_eq!(
            (
                stats.hits,
                stats.misses,
                stats.inserts,
                stats.evictions,
                stats.expirations,
                stats.stale_rejections
            ),
            (
                model.stats.hits,
                model.stats.misses,
                model.stats.inserts,
                model.stats.evictions,
                model.stats.expirations,
                model.stats.stale_rejections
            )
        );
    }
    Ok(())
}

/// Small caches: a handful of entries, so evictions and floors are exercised often.
const CAPACITY: u64 = 6 * (ENTRY_OVERHEAD + 150);
/// Larger caches: dozens of entries, so the skip-the-move rule (front quarter) matters.
const LARGE: u64 = 48 * (ENTRY_OVERHEAD + 20);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn lru_matches_model_when_large(ops in proptest::collection::vec(op(120, 40), 1..800)) {
        let model = Model { capacity: LARGE, ..Model::default() };
        run_against_model(Lru::new(LARGE), model, ops)?;
    }

    #[test]
    fn lru2_matches_model_when_large(ops in proptest::collection::vec(op(120, 40), 1..800)) {
        let protected = (LARGE as f64 * 0.3) as u64;
        let model = Model { capacity: LARGE, protected: Some(protected), ..Model::default() };
        run_against_model(Lru2::with_protected(LARGE, 0.3), model, ops)?;
    }

    #[test]
    fn lru_matches_model(ops in proptest::collection::vec(op(24, 300), 1..200)) {
        let model = Model { capacity: CAPACITY, ..Model::default() };
        run_against_model(Lru::new(CAPACITY), model, ops)?;
    }

    #[test]
    fn lru2_matches_model(ops in proptest::collection::vec(op(24, 300), 1..200)) {
        let protected = (CAPACITY as f64 * 0.5) as u64;
        let model = Model { capacity: CAPACITY, protected: Some(protected), ..Model::default() };
        run_against_model(Lru2::with_protected(CAPACITY, 0.5), model, ops)?;
    }
}

fn fill<P: Policy>(store: &mut P, keys: impl Iterator<Item = String>) {
    for k in keys {
        let _ = store.insert(
            key_hash(&k),
            &k,
            Entry::new(Bytes::from_static(b"v"), 0),
            None,
        );
    }
}

fn hot_survivors<P: Policy>(mut store: P) -> usize {
    let hot: Vec<String> = (0..20).map(|i| format!("hot{i}")).collect();
    fill(&mut store, hot.iter().cloned());
    for _ in 0..2 {
        for k in &hot {
            assert!(store.get(key_hash(k), k, 0, None).is_some());
        }
    }
    // A one-off scan of 200 keys never seen again.
    fill(&mut store, (0..200).map(|i| format!("scan{i}")));
    hot.iter()
        .filter(|k| store.get(key_hash(k), k, 0, None).is_some())
        .count()
}

#[test]
fn lru2_keeps_hot_set_through_a_scan_that_flushes_lru() {
    let capacity = 40 * entry_charge("hot00", b"v");
    assert_eq!(
        hot_survivors(Lru::new(capacity)),
        0,
        "plain LRU loses the hot set"
    );
    assert_eq!(
        hot_survivors(Lru2::new(capacity)),
        20,
        "LRU2 keeps all of it"
    );
}

#[test]
fn lru2_promotes_on_second_access_and_evicts_level_one_first() {
    let one = entry_charge("a", b"v");
    let mut s = Lru2::with_protected(3 * one, 0.7);
    fill(&mut s, ["a", "b", "c"].map(String::from).into_iter());
    // "a" is read: promoted. Then a new key must evict from level 1 ("b", the oldest there).
    assert!(s.get(key_hash("a"), "a", 0, None).is_some());
    fill(&mut s, std::iter::once("d".to_owned()));
    let present: Vec<bool> = ["a", "b", "c", "d"]
        .iter()
        .map(|k| s.get(key_hash(k), k, 0, None).is_some())
        .collect();
    assert_eq!(present, [true, false, true, true]);
    let mut evicted: Vec<Evicted> = Vec::new();
    let _ = s.insert(
        key_hash("e"),
        "e",
        Entry::new(Bytes::from_static(b"v"), 0),
        Some(&mut evicted),
    );
    assert_eq!(evicted.len(), 1);
}
