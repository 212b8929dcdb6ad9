//! Cost of a `Group::get` hit in one process, alone and as one node of three (where a
//! main hit also checks that this node still owns the key). Prints nanoseconds per get.
//! The three nodes are wired in-process (tests/common/in_process.rs), no sockets.
//! Run: `cargo run --release --example group_hit`.

#[path = "../tests/common/in_process.rs"]
mod in_process;

use std::time::Instant;

use bytes::Bytes;
use peercache::{Group, LoaderFn, Registry};

const KEYS: usize = 10_000;
const GETS: usize = 5_000_000;

/// Nanoseconds per hit over `keys`, all loaded first.
async fn ns_per_hit(group: &Group, keys: &[String]) -> f64 {
    for key in keys {
        group.get(key).await.expect("loads");
    }
    let started = Instant::now();
    for i in 0..GETS {
        std::hint::black_box(group.get(&keys[i % keys.len()]).await.expect("hit"));
    }
    started.elapsed().as_nanos() as f64 / GETS as f64
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let registry = Registry::new();
        let alone = registry
            .group("g")
            .capacity(64 << 20)
            .loader(LoaderFn(|key: String| async move { Ok(Bytes::from(key)) }))
            .build()
            .expect("valid group");
        let cluster = in_process::InProcess::new(&["a", "b", "c"], |g| g.capacity(64 << 20));
        let owned: Vec<String> = (0..)
            .map(|i| format!("key{i}"))
            .filter(|k| cluster.owner_in_view_of("a", k) == "a")
            .take(KEYS)
            .collect();
        let alone = ns_per_hit(&alone, &owned).await;
        let node = ns_per_hit(&cluster.group("a"), &owned).await;
        println!("Group::get hit, {KEYS} keys, {GETS} gets, one thread");
        println!("alone: {alone:.1} ns/get");
        println!(
            "one of three nodes: {node:.1} ns/get ({:.2}x)",
            node / alone
        );
    });
}
