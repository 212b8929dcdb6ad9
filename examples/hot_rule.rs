//! Which hot-copy rule answers most gets without a peer hop? A node's view of Zipf
//! traffic for keys other members own: every get the hot cache misses is a fetch from
//! the owner, after which the rule decides whether to keep a copy. Compares groupcache's
//! random tenth with the doorkeeper rule `Group` uses by default (keep on the second
//! fetch), and with both, for a few hot-cache sizes and skews.
//! Run: `cargo run --release --example hot_rule`.

#[path = "../loadgen/src/workload.rs"]
#[allow(dead_code)]
mod workload;

use std::time::Duration;

use bytes::Bytes;
use peercache::group::hot::{Doorkeeper, doorkeeper_slots};
use peercache::store::{self, Entry, Lru, Sharded, Store};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const KEYS: u64 = 1_000_000;
const GETS: usize = 2_000_000;
const VALUE: usize = 100;

#[derive(Clone, Copy)]
enum Rule {
    Sampled(f64),
    SecondFetch,
    SecondFetchOrSampled(f64),
}

fn hit_ratio(rule: Rule, entries: u64, skew: f64) -> f64 {
    let charge = store::entry_charge(&workload::key_name(0), &[0; VALUE]);
    let hot = Sharded::new(entries * charge, 1, Lru::new);
    let door = Doorkeeper::new(doorkeeper_slots(entries * charge));
    let mut rng = SmallRng::seed_from_u64(7);
    let value = Bytes::from(vec![0u8; VALUE]);
    let mut hits = 0;
    let zipf = workload::Zipf::new(KEYS, skew, 42).expect("valid parameters");
    for id in zipf.take(GETS) {
        let key = workload::key_name(id);
        if hot.get(&key, Duration::ZERO).is_some() {
            hits += 1;
            continue;
        }
        let keep = match rule {
            Rule::Sampled(p) => rng.random_bool(p),
            Rule::SecondFetch => door.seen_again(store::key_hash(&key)),
            Rule::SecondFetchOrSampled(p) => {
                door.seen_again(store::key_hash(&key)) | rng.random_bool(p)
            }
        };
        if keep {
            let _ = hot.insert(&key, Entry::new(value.clone(), 0));
        }
    }
    hits as f64 / GETS as f64
}

fn main() {
    println!("Hot-cache hit ratio, Zipf over {KEYS} keys, {GETS} gets, {VALUE}-byte values");
    println!();
    println!(
        "| skew | hot entries | random 1/10 (groupcache) | second fetch (ours) | second fetch or 1/10 | ours / groupcache |"
    );
    println!("|---|---|---|---|---|---|");
    for skew in [0.8, 0.99] {
        for entries in [1_000, 10_000, 100_000] {
            let sampled = hit_ratio(Rule::Sampled(0.1), entries, skew);
            let second = hit_ratio(Rule::SecondFetch, entries, skew);
            let both = hit_ratio(Rule::SecondFetchOrSampled(0.1), entries, skew);
            println!(
                "| {skew} | {entries} | {:.3} | {:.3} | {:.3} | {:.2}x |",
                sampled,
                second,
                both,
                second / sampled
            );
        }
    }
}
