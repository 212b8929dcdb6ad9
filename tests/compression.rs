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
            g = g.compress(Compression::new(codec, 1024));
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

/// One node keeping values in zstd (`mixed`'s first), or with `wire_only` compressing
/// them in zstd for the wire only, that holds "k", a 32 KiB JSON value, and a client of
/// its peer protocol.
async fn zstd_node_holding_k(
    db: &Db,
    wire_only: bool,
) -> (
    Cluster,
    String,
    peercache::proto::peer_client::PeerClient<tonic::transport::Channel>,
) {
    let cluster = match wire_only {
        false => Cluster::start(1, mixed(db)).await,
        true => {
            Cluster::start(1, |_, reg: &Registry| {
                reg.group("g")
                    .capacity(16 << 20)
                    .loader(db.clone())
                    .compress(Compression {
                        wire_only: true,
                        ..Compression::new(Codec::Zstd { level: 3 }, 1024)
                    })
                    .build()
                    .unwrap();
            })
            .await
        }
    };
    let node = &cluster.nodes[0];
    let value = json("k", 32 << 10);
    db.write("k", Some(&value));
    assert_eq!(node.group("g").get("k").await.unwrap(), value, "loaded");
    let raw = common::raw_peer(&node.id).await;
    (cluster, value, raw)
}

/// Answers (codec, bytes) of a zstd-keeping member about `value`, asked by a peer
/// that accepts zstd (its frame: smaller, decoding to the value), only LZ4 (the value:
/// not a codec the asker named) and none.
fn check_kept_codec(value: &str, zstd: (i32, Bytes), lz4_only: (i32, Bytes), plain: (i32, Bytes)) {
    assert_eq!(zstd.0, peercache::proto::Codec::Zstd as i32);
    assert!(zstd.1.len() * 3 < value.len(), "{} bytes", zstd.1.len());
    let decoded = Codec::Zstd { level: 3 }.decode(&zstd.1, 1 << 20).unwrap();
    assert_eq!(decoded, value.as_bytes());
    let whole = (0, Bytes::from(value.to_owned()));
    assert_eq!(lz4_only, whole, "not a codec the asker named: decompressed");
    assert_eq!(plain, whole);
}

/// An owner that keeps a value compressed answers with those bytes: what crosses the
/// link is smaller than the value, and a peer that accepts no codec gets it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_sends_its_compressed_bytes_only_to_peers_that_accept_them() {
    let db = Db::default();
    let (_cluster, value, mut raw) = zstd_node_holding_k(&db, false).await;
    let ask = |accept: Vec<i32>| peercache::proto::GetRequest {
        group: "g".into(),
        key: "k".into(),
        deadline_ms: 2000,
        relay: false,
        accept,
        max_reply_bytes: 0,
    };
    let zstd = peercache::proto::Codec::Zstd as i32;
    let lz4 = peercache::proto::Codec::Lz4 as i32;
    let answer = |r: peercache::proto::GetResponse| (r.codec, r.value);
    check_kept_codec(
        &value,
        answer(raw.get(ask(vec![zstd])).await.unwrap().into_inner()),
        answer(raw.get(ask(vec![lz4])).await.unwrap().into_inner()),
        answer(raw.get(ask(vec![])).await.unwrap().into_inner()),
    );
}

/// A member asked for its entry of a key that moved (Peek, a handoff) answers in the
/// codec it keeps the value in when the asker accepts it, else decompressed; a member
/// that compresses only for the wire compresses it for such an asker, as for a get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peeked_entry_travels_as_it_is_kept_to_askers_that_accept_it() {
    for wire_only in [false, true] {
        peek_in_zstd(wire_only).await;
    }
}

async fn peek_in_zstd(wire_only: bool) {
    let db = Db::default();
    let (cluster, value, mut raw) = zstd_node_holding_k(&db, wire_only).await;
    let peek = |accept: Vec<i32>| peercache::proto::PeekRequest {
        group: "g".into(),
        key: "k".into(),
        deadline_ms: 2000,
        // A member this node has not seen: a new one, which may be answered.
        asker: "127.0.0.1:1".into(),
        accept,
    };
    let zstd = peercache::proto::Codec::Zstd as i32;
    let lz4 = peercache::proto::Codec::Lz4 as i32;
    let answer = |r: peercache::proto::PeekResponse| {
        assert!(r.found);
        (r.codec, r.value)
    };
    check_kept_codec(
        &value,
        answer(raw.peek(peek(vec![zstd])).await.unwrap().into_inner()),
        answer(raw.peek(peek(vec![lz4])).await.unwrap().into_inner()),
        answer(raw.peek(peek(vec![])).await.unwrap().into_inner()),
    );
    let kept = cluster.nodes[0].group("g").stats().stored_bytes_in;
    let raw_in = cluster.nodes[0].group("g").stats().raw_bytes_in;
    match wire_only {
        // Kept as it is: nothing counted as compressed in memory.
        true => assert_eq!((kept, raw_in), (0, 0)),
        false => assert!(kept * 3 < raw_in, "{kept} of {raw_in}"),
    }
}

/// An HTTP read: the body as sent (no decoding), and its `Content-Encoding`.
async fn http_get(url: &str, accept_encoding: Option<&str>) -> (Vec<u8>, Option<String>) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(accept) = accept_encoding {
        req = req.header("accept-encoding", accept);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    let header = |name| (resp.headers().get(name)).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(header("vary").as_deref(), Some("accept-encoding"), "{url}");
    let coding = header("content-encoding");
    (resp.bytes().await.unwrap().to_vec(), coding)
}

/// Node 0 keeps values in zstd, node 1 in gzip, node 2 in zstd only on the wire; no
/// hot copies, so every read of another member's key is a call to its owner.
fn for_http(db: &Db) -> impl Fn(usize, &Registry) + '_ {
    move |i, reg| {
        let codec = [
            Codec::Zstd { level: 3 },
            Codec::Gzip { level: 6 },
            Codec::Zstd { level: 3 },
        ][i];
        reg.group("g")
            .capacity(16 << 20)
            .hot(peercache::group::HotConfig {
                fill_ratio: 0.0,
                second_fetch: false,
                ..Default::default()
            })
            .timeout(Duration::from_secs(5))
            .loader(db.clone())
            .compress(Compression {
                wire_only: i == 2,
                ..Compression::new(codec, 1024)
            })
            .build()
            .unwrap();
    }
}

/// HTTP clients that name gzip or zstd in `Accept-Encoding` receive a value the node
/// holds, or receives from the key's owner, in that codec as it is, with
/// `Content-Encoding`; every other client the value itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_clients_that_accept_a_codec_get_the_compressed_bytes_as_they_are() {
    let db = Db::default();
    let cluster = Cluster::start(3, for_http(&db)).await;
    let zstd_key = cluster.key_owned_by(0, "z");
    let gzip_key = cluster.key_owned_by(1, "gz");
    let wire_key = cluster.key_owned_by(2, "w");
    let short_key = cluster.key_owned_by(0, "short");
    let mut values = std::collections::BTreeMap::new();
    for (key, len) in [
        (&zstd_key, 24 << 10),
        (&gzip_key, 24 << 10),
        (&wire_key, 24 << 10),
        (&short_key, 300),
    ] {
        let value = json(key, len);
        db.write(key, Some(&value));
        values.insert(key.clone(), value.into_bytes());
        // Loaded at the owner, which keeps it (compressed but at node 2).
        let owner = &cluster.nodes[cluster.owner(key)];
        assert_eq!(owner.group("g").get(key).await.unwrap(), values[key]);
    }
    let url = |i: usize, key: &str| format!("{}/v1/groups/g/keys/{key}", cluster.nodes[i].url);
    let gunzip = |body: &[u8]| {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut out).unwrap();
        out
    };
    let unzstd = |body: &[u8]| zstd::decode_all(body).unwrap();
    let browser = "gzip, deflate, br, zstd";
    for (i, node) in cluster.nodes.iter().enumerate() {
        let tag = |key: &str| format!("{key} through {}", node.id);
        // Kept in zstd at its owner: a hit there, a call to it elsewhere (no hot copies).
        let (body, coding) = http_get(&url(i, &zstd_key), Some(browser)).await;
        assert_eq!(coding.as_deref(), Some("zstd"), "{}", tag(&zstd_key));
        assert!(
            body.len() * 3 < 24 << 10,
            "{}: {} bytes",
            tag(&zstd_key),
            body.len()
        );
        assert_eq!(unzstd(&body), values[&zstd_key], "{}", tag(&zstd_key));
        let (body, coding) = http_get(&url(i, &gzip_key), Some("x-gzip")).await;
        assert_eq!(coding.as_deref(), Some("gzip"), "{}", tag(&gzip_key));
        assert_eq!(gunzip(&body), values[&gzip_key], "{}", tag(&gzip_key));
        // A codec the client does not name, a refused one, no header, a short value:
        // the value itself.
        for (key, accept) in [
            (&zstd_key, Some("gzip")),
            (&gzip_key, Some("zstd, gzip;q=0")),
            (&zstd_key, None),
            (&short_key, Some(browser)),
        ] {
            let (body, coding) = http_get(&url(i, key), accept).await;
            assert_eq!(coding, None, "{} with {accept:?}", tag(key));
            assert_eq!(body, values[key], "{}", tag(key));
        }
        // Node 2 keeps its values as they are and compresses them for the other
        // members only.
        let (body, coding) = http_get(&url(i, &wire_key), Some("zstd")).await;
        match i {
            2 => {
                assert_eq!(coding, None, "kept as it is at its owner");
                assert_eq!(body, values[&wire_key]);
            }
            _ => {
                assert_eq!(coding.as_deref(), Some("zstd"), "{}", tag(&wire_key));
                assert_eq!(unzstd(&body), values[&wire_key], "{}", tag(&wire_key));
            }
        }
    }
    // A real client: curl --compressed offers gzip and zstd (among others) and decodes
    // what comes compressed.
    for (i, key) in [(1, &zstd_key), (0, &gzip_key), (0, &wire_key)] {
        let out = tokio::process::Command::new("curl")
            .args(["--compressed", "-s", "-D", "-", &url(i, key)])
            .output()
            .await
            .unwrap_or_else(|e| panic!("running curl: {e}; install it: apt-get install -y curl"));
        assert!(
            out.status.success(),
            "curl {}: {:?}",
            url(i, key),
            out.status
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains("content-encoding: gzip") || head.contains("content-encoding: zstd"),
            "{key}: {head}"
        );
        assert_eq!(body.as_bytes(), &values[key][..], "{key} through curl");
    }
    let s = cluster.nodes[2].group("g").stats();
    assert_eq!(s.stored_bytes_in, 0, "node 2 keeps nothing compressed");
    assert!(
        s.store.bytes > 24 << 10,
        "node 2 holds {} bytes",
        s.store.bytes
    );
    assert!(s.compress_micros > 0, "node 2 compressed for the wire");
    for key in values.keys() {
        assert_eq!(db.loads(key), 1, "{key}: loaded once, by its owner");
    }
}

/// Every node keeps values of 1 KiB or more in zstd and every copy of other members'
/// keys.
fn zstd_everywhere(db: &Db) -> impl Fn(usize, &Registry) + '_ {
    move |_, reg| {
        reg.group("g")
            .capacity(16 << 20)
            .hot(keep_all_copies())
            .timeout(Duration::from_secs(5))
            .loader(db.clone())
            .compress(Compression::new(Codec::Zstd { level: 3 }, 1024))
            .build()
            .unwrap();
    }
}

/// A hot copy of a value its owner sent compressed in the codec this node keeps values
/// in is kept as it came (not decompressed and compressed again), and served from the
/// hot cache to HTTP clients that accept the codec as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_copies_keep_and_pass_on_the_owners_compressed_bytes() {
    let db = Db::default();
    let cluster = Cluster::start(2, zstd_everywhere(&db)).await;
    let key = cluster.key_owned_by(1, "hot");
    let value = json(&key, 32 << 10);
    db.write(&key, Some(&value));
    let (owner, asker) = (cluster.nodes[1].group("g"), cluster.nodes[0].group("g"));
    assert_eq!(owner.get(&key).await.unwrap(), value, "loaded at its owner");
    let kept_at_owner = owner.stats().stored_bytes_in;
    assert_eq!(
        asker.get(&key).await.unwrap(),
        value,
        "fetched, and kept as a hot copy"
    );
    let s = asker.stats();
    assert_eq!(
        (s.peer_loads, s.compress_micros),
        (1, 0),
        "kept without compressing"
    );
    assert_eq!(
        s.stored_bytes_in, kept_at_owner,
        "the owner's bytes, as the owner keeps them"
    );
    let url = format!("{}/v1/groups/g/keys/{key}", cluster.nodes[0].url);
    let (body, coding) = http_get(&url, Some("zstd")).await;
    assert_eq!(coding.as_deref(), Some("zstd"));
    assert_eq!(zstd::decode_all(&body[..]).unwrap(), value.as_bytes());
    let s = asker.stats();
    assert_eq!((s.peer_loads, s.hot_hits), (1, 1), "from the hot copy");
    assert_eq!(db.loads(&key), 1);
}

/// A client that accepts only a codec the group does not keep values in reads a value
/// with one lookup of the main cache: it counts one hit (before: two, the compressed
/// bytes looked up, then the value again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_in_another_codec_is_one_lookup() {
    let db = Db::default();
    let cluster = Cluster::start(1, zstd_everywhere(&db)).await;
    let value = json("k", 16 << 10);
    db.write("k", Some(&value));
    let group = cluster.nodes[0].group("g");
    assert_eq!(group.get("k").await.unwrap(), value, "loaded");
    for accept in [vec![Codec::Lz4], vec![], vec![Codec::Zstd { level: 3 }]] {
        let hits = group.stats().store.hits;
        let (bytes, codec) = group.get_as("k", &accept).await.unwrap();
        assert_eq!(group.stats().store.hits, hits + 1, "{accept:?}: one lookup");
        assert_eq!(codec.decode(&bytes, 1 << 20).unwrap(), value.as_bytes());
    }
}

/// A hot key kept compressed is decompressed once for readers that do not accept its
/// codec, then answered from the cache of decoded values (`decoded_hits`, in
/// /metrics too); a write is read as the new value at once, on the owner and on a
/// member holding a hot copy; with the cache off every read decompresses. The member
/// that fetched the owner's compressed bytes counts the time it took to check them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_compressed_values_are_decoded_once() {
    for decoded in [None, Some(0)] {
        let db = Db::default();
        let cluster = Cluster::start(2, |_, reg: &Registry| {
            reg.group("g")
                .capacity(16 << 20)
                .hot(keep_all_copies())
                .timeout(Duration::from_secs(5))
                .loader(db.clone())
                .compress(Compression {
                    decoded,
                    ..Compression::new(Codec::Zstd { level: 3 }, 1024)
                })
                .build()
                .unwrap();
        })
        .await;
        let key = cluster.key_owned_by(0, "doc");
        let old = json("old", 16 << 10);
        db.write(&key, Some(&old));
        for node in &cluster.nodes {
            for _ in 0..5 {
                assert_eq!(node.group("g").get(&key).await.unwrap(), old);
            }
        }
        let hits = |i: usize| cluster.nodes[i].group("g").stats().decoded_hits;
        match decoded {
            // The owner: a load, then 4 hits decoded once; the other member: a fetch,
            // then 4 hits on its hot copy, decoded once.
            None => assert_eq!((hits(0), hits(1)), (3, 3)),
            Some(_) => assert_eq!((hits(0), hits(1)), (0, 0)),
        }
        if decoded.is_none() {
            let url = &cluster.nodes[0].url;
            let metric = metric(url, "peercache_decoded_hits_total{group=\"g\"}").await;
            assert_eq!(metric, Some(3), "in /metrics");
            // The member that fetched the owner's zstd bytes timed checking them; the
            // owner decoded nothing a peer sent.
            let decode_seconds = |i: usize| {
                let url = cluster.nodes[i].url.clone();
                async move {
                    let text = reqwest::get(format!("{url}/metrics")).await.unwrap();
                    let text = text.text().await.unwrap();
                    let line = (text.lines())
                        .find(|l| l.starts_with("peercache_peer_decompress_seconds_total "))
                        .expect("the counter is exported");
                    line.rsplit(' ').next().unwrap().parse::<f64>().unwrap()
                }
            };
            assert!(decode_seconds(1).await > 0.0);
            assert_eq!(decode_seconds(0).await, 0.0);
        }
        let new = Bytes::from(json("new", 16 << 10));
        db.write(&key, Some(std::str::from_utf8(&new).unwrap()));
        cluster.nodes[1]
            .group("g")
            .set(&key, new.clone(), None)
            .await
            .unwrap();
        for node in &cluster.nodes {
            for _ in 0..3 {
                assert_eq!(node.group("g").get(&key).await.unwrap(), new, "{decoded:?}");
            }
        }
    }
}

/// Whether a node holds a key, and its time to live (RESP EXISTS and TTL), are read
/// without decompressing the value: they leave nothing in the cache of decoded values.
/// (Before: both decoded the whole value, and the next read found it decoded.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_ttl_need_no_decompression() {
    let db = Db::default();
    let cluster = Cluster::start(1, |_, reg: &Registry| {
        reg.group("g")
            .capacity(16 << 20)
            .loader(db.clone())
            .compress(Compression::new(Codec::Zstd { level: 3 }, 1024))
            .build()
            .unwrap();
    })
    .await;
    let group = cluster.nodes[0].group("g");
    let value = json("k", 16 << 10);
    db.write("k", Some(&value));
    assert_eq!(group.get("k").await.unwrap(), value, "loaded");
    assert!(group.holds("k"));
    assert_eq!(group.cached_ttl("k"), Some(None), "held, never expires");
    assert_eq!(group.get("k").await.unwrap(), value);
    assert_eq!(group.stats().decoded_hits, 0, "this read decoded the value");
    assert_eq!(group.get("k").await.unwrap(), value);
    assert_eq!(group.stats().decoded_hits, 1);
}
