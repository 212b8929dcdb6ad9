//! Ring balance by virtual-node count: for 3..=16 equal members and 100,000 keys, the
//! busiest member's share over the mean, and how far the keys a newcomer takes are from
//! its fair share 1/(N+1). Used to choose `peercache::ring::DEFAULT_VNODES`.
//!
//! Run: `cargo run --release --example ring_balance`

use std::collections::BTreeMap;

use peercache::{Member, Ring};

fn main() {
    let keys: Vec<String> = (0..100_000).map(|i| format!("key:{i}")).collect();
    let members = |n: usize| -> Vec<Member> {
        (0..n)
            .map(|i| Member::new(format!("node-{i}"), format!("10.0.0.{i}:7000")))
            .collect()
    };
    println!("vnodes | worst busiest/mean | worst newcomer share vs fair");
    for vnodes in [160u32, 256, 400, 512, 1024] {
        let (mut worst_balance, mut worst_move) = (0f64, 0f64);
        for n in 3..=16 {
            let ring = Ring::new(members(n), vnodes);
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for k in &keys {
                *counts
                    .entry(&ring.owner(k).expect("members").id)
                    .or_default() += 1;
            }
            let mean = keys.len() as f64 / n as f64;
            let busiest = *counts.values().max().expect("members") as f64;
            worst_balance = worst_balance.max(busiest / mean);
            let grown = Ring::new(members(n + 1), vnodes);
            let moved = keys
                .iter()
                .filter(|k| ring.owner(k).map(|m| &m.id) != grown.owner(k).map(|m| &m.id))
                .count() as f64
                / keys.len() as f64;
            let fair = 1.0 / (n + 1) as f64;
            worst_move = worst_move.max((moved / fair).max(fair / moved));
        }
        println!("{vnodes:6} | {worst_balance:18.3} | {worst_move:.3}");
    }
}
