//! Property tests: each store against a simple reference model over random operations.
//!
//! The model keeps entries in a Vec ordered by recency and applies the same rules as the
//! store (byte capacity, version floors, TTL, level promotion) the obvious slow way. Both
//! must agree on every hit, miss, value and eviction.

use std::time::Duration;

use bytes::Bytes;
use peercache::store::{
    ENTRY_OVERHEAD, Entry, Evicted, Lru, Lru2, Policy, Rejected, Stats, VERSION_FLOORS,
    entry_charge, key_hash,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Get(u8),
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

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u8>().prop_map(|k| Op::Get(k % 24)),
        3 => (any::<u8>(), 0u16..300, proptest::option::of(1u8..20), 0u8..4).prop_map(
            |(k, len, ttl, back)| Op::Insert { key: k % 24, len, ttl, back }
        ),
        1 => any::<u8>().prop_map(|k| Op::Remove(k % 24)),
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
}

/// Reference model: `entries[0]` is the most recent; `level` 0 = probation, 1 = protected.
#[derive(Default)]
struct Model {
    entries: Vec<ModelEntry>,
    /// Floors by slot, as documented for `VERSION_FLOORS`.
    floors: std::collections::BTreeMap<usize, u64>,
    capacity: u64,
    /// None: plain LRU. Some(cap): LRU2 with that protected capacity.
    protected: Option<u64>,
    stats: Stats,
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
        let mut e = self.entries.remove(i);
        let value = e.value.clone();
        if let Some(cap) = self.protected {
            e.level = 1;
            self.entries.insert(0, e);
            // Demote the least recent protected entries while level 2 is over its share.
            while self.level_bytes(1) > cap
                && self.entries.iter().filter(|e| e.level == 1).count() > 1
            {
                let last = self.entries.iter().rposition(|e| e.level == 1).unwrap();
                let mut d = self.entries.remove(last);
                d.level = 0;
                // Front of level 0 = just before the first level-0 entry in recency order
                // does not matter for the model: only order within a level does.
                self.entries.insert(0, d);
            }
        } else {
            self.entries.insert(0, e);
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
        let floor = self.floors.get(&slot(key)).copied().unwrap_or(0);
        if version < floor {
            self.stats.stale_rejections += 1;
            return Err(Rejected::Stale);
        }
        self.floors.insert(slot(key), version);
        let level = match self.pos(key) {
            Some(i) => self.entries.remove(i).level,
            None => 0,
        };
        self.entries.insert(
            0,
            ModelEntry {
                key: key.to_owned(),
                value,
                version,
                expires,
                level,
            },
        );
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
            self.entries.remove(victim);
            self.stats.evictions += 1;
        }
        Ok(())
    }

    fn remove(&mut self, key: &str, version: u64) -> bool {
        let floor = self.floors.entry(slot(key)).or_insert(0);
        *floor = (*floor).max(version);
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
            Op::Get(k) => {
                let k = key(k);
                let got = store.get(key_hash(&k), &k, now, None).map(|h| h.value);
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
                let want = model.insert(
                    &k,
                    value.clone(),
                    version,
                    expires_at.map_or(u64::MAX, |d| d.as_nanos() as u64),
                );
                let got = store.insert(
                    key_hash(&k),
                    &k,
                    Entry {
                        value,
                        version,
                        expires_at,
                    },
                    None,
                );
                prop_assert_eq!(got, want, "step {} insert {}", step, k);
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

const CAPACITY: u64 = 6 * (ENTRY_OVERHEAD + 150);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn lru_matches_model(ops in proptest::collection::vec(op(), 1..200)) {
        let model = Model { capacity: CAPACITY, ..Model::default() };
        run_against_model(Lru::new(CAPACITY), model, ops)?;
    }

    #[test]
    fn lru2_matches_model(ops in proptest::collection::vec(op(), 1..200)) {
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
