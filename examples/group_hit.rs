//! Cost of a `Group::get` hit in one process, alone and as one node of three (where a
//! main hit also checks that this node still owns the key). Prints nanoseconds per get.
//! Run: `cargo run --release --example group_hit`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use peercache::peer::{PeerClient, PeerPicker};
use peercache::{LoaderFn, Member, Registry, TokioClock};

const KEYS: usize = 10_000;
const GETS: usize = 5_000_000;

async fn ns_per_hit(with_peers: bool) -> f64 {
    let registry = Registry::new(Arc::new(TokioClock::new()));
    let group = registry
        .group("g")
        .capacity(64 << 20)
        .loader(LoaderFn(|key: String| async move { Ok(Bytes::from(key)) }))
        .build()
        .expect("valid group");
    if with_peers {
        let metrics = Arc::new(peercache::metrics::Metrics::new(registry.clone()));
        // Lazy channels: nothing dials, since every key read below is owned here.
        let picker = PeerPicker::new(
            "a",
            peercache::ring::DEFAULT_VNODES,
            Box::new(move |m: &Member| {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", m.addr))
                    .map_err(|e| peercache::Error::Config(e.to_string()))?
                    .connect_lazy();
                Ok(PeerClient::new(m.id.as_str(), channel, metrics.clone()))
            }),
        );
        picker.set_members(
            ["a", "b", "c"]
                .map(|id| Member::new(id, format!("{id}:7000")))
                .to_vec(),
        );
        registry.set_peers(Arc::new(picker)).expect("first picker");
    }
    let owned = |k: &String| registry.peers().is_none_or(|p| p.owns(k));
    let keys: Vec<String> = (0..)
        .map(|i| format!("key{i}"))
        .filter(owned)
        .take(KEYS)
        .collect();
    for key in &keys {
        group.get(key).await.expect("loads");
    }
    let started = Instant::now();
    for i in 0..GETS {
        std::hint::black_box(group.get(&keys[i % KEYS]).await.expect("hit"));
    }
    started.elapsed().as_nanos() as f64 / GETS as f64
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let alone = ns_per_hit(false).await;
        let node = ns_per_hit(true).await;
        println!("Group::get hit, {KEYS} keys, {GETS} gets, one thread");
        println!("alone: {alone:.1} ns/get");
        println!(
            "one of three nodes: {node:.1} ns/get ({:.2}x)",
            node / alone
        );
    });
}
