//! Values kept compressed (`GroupBuilder::compress`, `--compress`) on real nodes: a
//! cluster whose members use different codecs, or none, serves every value whole
//! through every member, keeps compressible values in fewer bytes, and sends an owner's
//! compressed bytes over the peer link as they are.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, Db, keep_all_copies, metric};
use peercache::codec::Codec;
use peercache::group::{Compression, Registry};

/// A JSON-like value of about `len` bytes, different per key.
fn json(key: &str, len: usize) -> String {
    let mut out = String::from("[");
    let mut i = 0;
    while out.len() < len {
        out.push_str(&format!(
            "{{\"id\":{i},\"key\":\"{key}\",\"name\":\"user {i}\",\"active\":{},\"tags\":[\"a\",\"b\"]}},",
            i % 3 == 0
        ));
        i += 1;
    }
    out.push(']');
    out
}

/// Node 0 keeps values in zstd, node 1 in LZ4, node 2 as they are.
fn mixed(db: &Db) -> impl Fn(usize, &Registry) + '_ {
    move |i, reg| {
        let mut g = reg
            .group("g")
            .capacity(16 << 20)
            .hot(keep_all_copies())
            .timeout(Duration::from_secs(5))
            .loader(db.clone());
        let codec = [Some(Codec::Zstd { level: 3 }), Some(Codec::Lz4), None][i];
        if let Some(codec) = codec {
            g = g.compress(Compression { codec, min: 1024 });
        }
        g.build().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_with_different_codecs_serve_every_value_whole() {
    let db = Db::default();
    let cluster = Cluster::start(3, mixed(&db)).await;
    let keys: Vec<String> = (0..30).map(|i| format!("doc{i}")).collect();
    // Some short (kept as they are), most compressible.
    let values: Vec<Bytes> = (keys.iter().enumerate())
        .map(|(i, key)| Bytes::from(json(key, if i % 5 == 0 { 200 } else { 16 << 10 })))
        .collect();
    for (key, value) in keys.iter().zip(&values) {
        db.write(key, Some(std::str::from_utf8(value).unwrap()));
    }
    for node in &cluster.nodes {
        let group = node.group("g");
        for ((key, want), got) in keys.iter().zip(&values).zip(group.get_many(&keys).await) {
            assert_eq!(&got.unwrap(), want, "{key} through {}", node.id);
        }
        // Again, from the caches (main or hot) this time.
        for (key, want) in keys.iter().zip(&values) {
            assert_eq!(
                &group.get(key).await.unwrap(),
                want,
                "{key} cached at {}",
                node.id
            );
        }
    }
    for key in &keys {
        assert_eq!(db.loads(key), 1, "{key}: loaded once, by its owner");
    }
    // The compressing members hold their values in a fraction of the bytes.
    for i in [0, 1] {
        let s = cluster.nodes[i].group("g").stats();
        assert!(s.raw_bytes_in > 0, "node {i} stored values");
        assert!(
            s.stored_bytes_in * 3 < s.raw_bytes_in,
            "node {i}: {} bytes stored for {} raw",
            s.stored_bytes_in,
            s.raw_bytes_in
        );
        let url = &cluster.nodes[i].url;
        let raw = metric(url, "peercache_raw_bytes_in_total{group=\"g\"}").await;
        assert_eq!(raw, Some(s.raw_bytes_in), "in /metrics");
    }
    assert_eq!(cluster.nodes[2].group("g").stats().raw_bytes_in, 0);
    // A set through a member that compresses differently reads back everywhere.
    let key = cluster.key_owned_by(0, "written");
    let value = Bytes::from(json("w", 8 << 10));
    cluster.nodes[2]
        .group("g")
        .set(&key, value.clone(), None)
        .await
        .unwrap();
    for node in &cluster.nodes {
        assert_eq!(node.group("g").get(&key).await.unwrap(), value);
    }
}

/// An owner that keeps a value compressed answers with those bytes: what crosses the
/// link is smaller than the value, and a peer that accepts no codec gets it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_sends_its_compressed_bytes_only_to_peers_that_accept_them() {
    let db = Db::default();
    let cluster = Cluster::start(1, mixed(&db)).await;
    let node = &cluster.nodes[0];
    let value = json("k", 32 << 10);
    db.write("k", Some(&value));
    assert_eq!(node.group("g").get("k").await.unwrap(), value, "loaded");
    let mut raw = common::raw_peer(&node.id).await;
    let ask = |accept: Vec<i32>| peercache::proto::GetRequest {
        group: "g".into(),
        key: "k".into(),
        deadline_ms: 2000,
        relay: false,
        accept,
    };
    let zstd = peercache::proto::Codec::Zstd as i32;
    let packed = raw.get(ask(vec![zstd])).await.unwrap().into_inner();
    assert_eq!(packed.codec, zstd);
    assert!(
        packed.value.len() * 3 < value.len(),
        "{} bytes",
        packed.value.len()
    );
    let decoded = Codec::Zstd { level: 3 }
        .decode(&packed.value, 1 << 20)
        .unwrap();
    assert_eq!(decoded, value.as_bytes());
    let lz4_only = raw
        .get(ask(vec![peercache::proto::Codec::Lz4 as i32]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        lz4_only.codec, 0,
        "not a codec the asker named: decompressed"
    );
    assert_eq!(lz4_only.value, value);
    let plain = raw.get(ask(vec![])).await.unwrap().into_inner();
    assert_eq!((plain.codec, plain.value), (0, Bytes::from(value)));
}
