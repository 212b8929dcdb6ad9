//! Store throughput against moka and quick_cache, in the same run.
//!
//! - `get_hit/1thread`, `get_hit/2threads`: gets of present keys (nothing is ever
//!   evicted) in a precomputed pseudo-random order; with two threads each walks its own
//!   disjoint half of the keys.
//! - `insert/1thread`: inserts of keys not in a full cache, so every insert evicts.
//!
//! Our stores are driven through the [`Store`] trait, as a group uses them. Throughput
//! is in elements (gets or inserts) per iteration, so criterion reports ops/s;
//! `benches/hit_ratio.rs` turns the saved estimates into `reports/store.md`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use peercache::store::{ENTRY_OVERHEAD, Entry, Lru, Lru2, Sharded, Store};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;

/// Keys present during the get benches, and capacity (in entries) of the insert bench.
const ENTRIES: usize = 100_000;
/// Value size in bytes.
const VALUE_LEN: usize = 100;
/// Key length: `key:` + 8 digits.
const KEY_LEN: usize = 12;
/// Fresh keys the insert bench cycles through (a power of two, 10x `ENTRIES`), so a key
/// comes back only long after it was evicted.
const INSERT_POOL: usize = 1 << 20;
const SEED: u64 = 0x5eed;

/// The calls a contender must answer; generic so each one is monomorphized.
trait Cache: Sync {
    /// Looks `key` up; true on a hit.
    fn get(&self, key: &str) -> bool;
    /// Inserts `key` (the owned-key caches allocate a `String`, as ours allocate a
    /// `Box<str>`).
    fn insert(&self, key: &str, value: &Bytes);
    /// Entries held (after pending maintenance).
    fn len(&self) -> usize;
}

impl<S: Store> Cache for S {
    fn get(&self, key: &str) -> bool {
        Store::get(self, key, Duration::ZERO).is_some()
    }
    fn insert(&self, key: &str, value: &Bytes) {
        Store::insert(self, key, Entry::new(value.clone(), 0))
            .expect("version 0 is never stale and bench entries fit a bucket");
    }
    fn len(&self) -> usize {
        Store::len(self)
    }
}

struct Moka(moka::sync::Cache<String, Bytes>);

impl Cache for Moka {
    fn get(&self, key: &str) -> bool {
        self.0.get(key).is_some()
    }
    fn insert(&self, key: &str, value: &Bytes) {
        self.0.insert(key.to_owned(), value.clone());
    }
    fn len(&self) -> usize {
        self.0.run_pending_tasks();
        self.0.entry_count() as usize
    }
}

struct Quick(quick_cache::sync::Cache<String, Bytes>);

impl Cache for Quick {
    fn get(&self, key: &str) -> bool {
        self.0.get(key).is_some()
    }
    fn insert(&self, key: &str, value: &Bytes) {
        self.0.insert(key.to_owned(), value.clone());
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

fn key(id: usize) -> String {
    format!("key:{id:08}")
}

/// Bytes our stores charge for `entries` bench entries.
fn bytes_for(entries: usize) -> u64 {
    entries as u64 * ((KEY_LEN + VALUE_LEN) as u64 + ENTRY_OVERHEAD)
}

/// A contender behind one virtual call per bench (not per operation).
trait Run {
    fn get_hit_1(&self, g: &mut BenchmarkGroup<'_, WallTime>, name: &str);
    fn get_hit_2(&self, g: &mut BenchmarkGroup<'_, WallTime>, name: &str);
    fn insert_1(&self, g: &mut BenchmarkGroup<'_, WallTime>, name: &str);
    /// Inserts `keys`, each with a value of its own.
    fn fill(&self, keys: &[String]);
    fn len(&self) -> usize;
}

/// The five contenders, each able to hold `entries` entries (counted in entries or
/// bytes), filled with `keys`.
fn contenders(entries: usize, keys: &[String]) -> Vec<(&'static str, Box<dyn Run>)> {
    let bytes = bytes_for(entries);
    let all: Vec<(&'static str, Box<dyn Run>)> = vec![
        ("Lru", Box::new(Sharded::new(bytes, 1, Lru::new))),
        ("Lru2", Box::new(Sharded::new(bytes, 1, Lru2::new))),
        (
            "Sharded<Lru2>",
            Box::new(Sharded::new(bytes, 16, Lru2::new)),
        ),
        (
            "moka",
            Box::new(Moka(moka::sync::Cache::new(entries as u64))),
        ),
        (
            "quick_cache",
            Box::new(Quick(quick_cache::sync::Cache::new(entries))),
        ),
    ];
    for (_, cache) in &all {
        cache.fill(keys);
    }
    all
}

/// Precomputed inputs shared by all contenders.
struct Inputs {
    /// The value of every insert in the insert bench: one buffer is fine on one thread.
    value: Bytes,
    /// The `ENTRIES` keys in the order they are inserted.
    fill: Vec<String>,
    /// The same keys in the order they are read: another shuffle, so reads do not walk
    /// memory in allocation order.
    shuffled: Vec<String>,
    /// Two disjoint shuffled halves, one per thread.
    halves: [Vec<String>; 2],
    /// Keys never used by the get benches, for inserts.
    fresh: Vec<String>,
}

fn inputs() -> &'static Inputs {
    static INPUTS: std::sync::OnceLock<Inputs> = std::sync::OnceLock::new();
    INPUTS.get_or_init(|| {
        let mut rng = SmallRng::seed_from_u64(SEED);
        let mut fill: Vec<String> = (0..ENTRIES).map(key).collect();
        fill.shuffle(&mut rng);
        let mut shuffled = fill.clone();
        shuffled.shuffle(&mut rng);
        let halves = [0, 1].map(|t| {
            shuffled
                .iter()
                .skip(t)
                .step_by(2)
                .cloned()
                .collect::<Vec<_>>()
        });
        Inputs {
            value: Bytes::from(vec![0xab; VALUE_LEN]),
            fill,
            shuffled,
            halves,
            fresh: (ENTRIES..ENTRIES + INSERT_POOL).map(key).collect(),
        }
    })
}

impl<C: Cache> Run for C {
    fn fill(&self, keys: &[String]) {
        for k in keys {
            // Not one shared buffer: a hit clones the value, and two threads bumping
            // the same refcount would measure cache-line ping-pong, not the cache.
            self.insert(k, &Bytes::from(vec![k.len() as u8; VALUE_LEN]));
        }
    }

    fn len(&self) -> usize {
        Cache::len(self)
    }

    fn get_hit_1(&self, g: &mut BenchmarkGroup<'_, WallTime>, name: &str) {
        let keys = &inputs().shuffled;
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                let hit = self.get(&keys[i]);
                i += 1;
                if i == keys.len() {
                    i = 0;
                }
                black_box(hit)
            })
        });
    }

    fn get_hit_2(&self, g: &mut BenchmarkGroup<'_, WallTime>, name: &str) {
        let halves = &inputs().halves;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for keys in halves {
                        s.spawn(move || {
                            let mut hits = 0u64;
                            for k in keys.iter().cycle().take(iters as usize) {
                                hits += u64::from(self.get(k));
                            }
                            black_box(hits)
                        });
                    }
                });
                start.elapsed()
            })
        });
    }

    fn insert_1(&self, g: &mut BenchmarkGroup<'_, WallTime>, name: &str) {
        let Inputs { value, fresh, .. } = inputs();
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                self.insert(&fresh[i], value);
                i = (i + 1) & (INSERT_POOL - 1);
            })
        });
    }
}

fn get_hit(c: &mut Criterion) {
    let inputs = inputs();
    // Twice the room needed, so no bucket of the sharded store ever evicts.
    let caches = contenders(2 * ENTRIES, &inputs.fill);
    for (name, cache) in &caches {
        assert_eq!(
            cache.len(),
            ENTRIES,
            "{name} must hold every key for a hit bench"
        );
    }
    let mut g = c.benchmark_group("get_hit/1thread");
    g.throughput(Throughput::Elements(1));
    for (name, cache) in &caches {
        cache.get_hit_1(&mut g, name);
    }
    g.finish();
    let mut g = c.benchmark_group("get_hit/2threads");
    // One iteration is one get on each of the two threads.
    g.throughput(Throughput::Elements(2));
    for (name, cache) in &caches {
        cache.get_hit_2(&mut g, name);
    }
    g.finish();
}

fn insert(c: &mut Criterion) {
    let inputs = inputs();
    // Filled to capacity first, so every measured insert evicts.
    let caches = contenders(ENTRIES, &inputs.fill);
    let mut g = c.benchmark_group("insert/1thread");
    g.throughput(Throughput::Elements(1));
    for (name, cache) in &caches {
        cache.insert_1(&mut g, name);
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20)
}

fn main() {
    // What criterion_group!/criterion_main! expand to, without their undocumented pub fn.
    let mut c = config().configure_from_args();
    get_hit(&mut c);
    insert(&mut c);
    c.final_summary();
}
