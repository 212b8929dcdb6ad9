//! `peercache serve --resp-addr`: real processes on loopback driven by real Redis
//! clients. This file uses the `redis` crate (async, pipelined, RESP2 and RESP3) on one
//! node and on a 3-node cluster; tools.rs runs redis-cli, redis-py and
//! redis-benchmark; auth.rs the client tokens over AUTH and HELLO.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, RedisResult, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod tools;

use common::process::{Proc, free_port, free_ports};

/// A node serving Redis clients on `port`.
struct RespNode {
    _proc: Proc,
    port: u16,
}

/// `peercache serve` with `--resp-addr` on a free port, `args` added.
async fn start(args: &[&str]) -> RespNode {
    let port = free_port();
    let grpc = format!("127.0.0.1:{}", free_port());
    let resp = format!("127.0.0.1:{port}");
    let base = ["--grpc-addr", &grpc, "--resp-addr", &resp];
    let (proc, _) = common::start_serve(&[&base[..], args].concat()).await;
    RespNode { _proc: proc, port }
}

/// Three nodes that list each other as static peers; pure caches of group `g` (the
/// source has nothing), hot copies off so every read of another's key asks its owner.
async fn start_cluster() -> Vec<RespNode> {
    let grpc = free_ports::<3>().map(|p| format!("127.0.0.1:{p}"));
    let peers = grpc.join(",");
    let mut nodes = Vec::new();
    for addr in &grpc {
        let port = free_port();
        let resp = format!("127.0.0.1:{port}");
        let args = [
            "--group",
            "g",
            "--source",
            "none",
            "--grpc-addr",
            addr,
            "--peers",
            &peers,
            "--resp-addr",
            &resp,
            "--hot-second-fetch",
            "false",
        ];
        let (proc, _) = common::start_serve(&args).await;
        nodes.push(RespNode { _proc: proc, port });
    }
    nodes
}

/// A multiplexed connection speaking RESP2 or RESP3 (`resp3`), with `auth` in the URL.
async fn connect(port: u16, resp3: bool, auth: Option<&str>) -> RedisResult<MultiplexedConnection> {
    let auth = auth
        .map(|token| format!("default:{token}@"))
        .unwrap_or_default();
    let proto = if resp3 { "?protocol=resp3" } else { "" };
    let client = redis::Client::open(format!("redis://{auth}127.0.0.1:{port}/{proto}"))?;
    client.get_multiplexed_async_connection().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_reads_through_writes_and_pipelines_in_both_protocols() {
    let node = start(&["--group", "demo", "--source", "demo"]).await;
    for resp3 in [false, true] {
        let mut c = connect(node.port, resp3, None).await.unwrap();
        // A miss reads through to the source, as an HTTP get does.
        let loaded: String = c.get(format!("fresh-{resp3}")).await.unwrap();
        assert!(
            loaded.starts_with(&format!("value of fresh-{resp3}")),
            "{loaded}"
        );
        let pong: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
        assert_eq!(pong, "PONG");

        // A pipeline: answered in order, in one round trip.
        let (ok, got, held, removed, ttl, echoed): (String, String, i64, i64, i64, String) =
            redis::pipe()
                .set_ex("p", "written", 100)
                .get("p")
                .exists(&["p", "never-read"][..])
                .del("p")
                .ttl("never-read")
                .cmd("ECHO")
                .arg("hi")
                .query_async(&mut c)
                .await
                .unwrap();
        assert_eq!(
            (ok.as_str(), got.as_str(), held, removed, ttl),
            ("OK", "written", 1, 1, -2)
        );
        assert_eq!(echoed, "hi");
        // Writes split the runs of reads a pipeline answers together: each read sees
        // the writes before it, and none after it.
        let seen: (String, String, String, String, String, String) = redis::pipe()
            .set("order", "1")
            .get("order")
            .get("order")
            .set("order", "2")
            .get("order")
            .get("order")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(
            seen,
            (
                "OK".into(),
                "1".into(),
                "1".into(),
                "OK".into(),
                "2".into(),
                "2".into()
            )
        );
        // Removed from the cache: read through to the source again.
        let again: String = c.get("p").await.unwrap();
        assert!(again.starts_with("value of p"), "{again}");

        let values: Vec<String> = c.mget(&["m1", "m2", "m3"]).await.unwrap();
        assert_eq!(values.len(), 3);
        assert!(values[2].starts_with("value of m3"), "{values:?}");
        let ttl: i64 = c.ttl("m1").await.unwrap();
        assert!((250..=300).contains(&ttl), "the group's default TTL: {ttl}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_keys_are_nil_and_ex_and_px_expire() {
    let node = start(&["--group", "g", "--source", "none"]).await;
    let mut c = connect(node.port, false, None).await.unwrap();
    let missing: Option<String> = c.get("nothing").await.unwrap();
    assert_eq!(missing, None);
    let _: () = c.set_ex("short", "v", 1).await.unwrap();
    let _: () = redis::cmd("SET")
        .arg("shorter")
        .arg("v")
        .arg("PX")
        .arg(300)
        .query_async(&mut c)
        .await
        .unwrap();
    let pttl: i64 = c.pttl("shorter").await.unwrap();
    assert!((1..=300).contains(&pttl), "{pttl}");
    let both: Vec<Option<String>> = c.mget(&["short", "shorter"]).await.unwrap();
    assert_eq!(both, vec![Some("v".into()), Some("v".into())]);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let gone: Vec<Option<String>> = c.mget(&["short", "shorter"]).await.unwrap();
    assert_eq!(gone, vec![None, None]);
    let held: i64 = c.exists("short").await.unwrap();
    assert_eq!(held, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_replies_and_the_connection_goes_on() {
    // Database 0 is a small group (its value limit is below 64 KiB), database 1 a
    // default one (1 MiB values).
    let node = start(&[
        "--group",
        "small:64KiB",
        "--group",
        "big",
        "--source",
        "none",
    ])
    .await;
    let mut c = connect(node.port, true, None).await.unwrap();
    let error = |r: RedisResult<Value>| r.expect_err("an error reply").to_string();

    let e = error(redis::cmd("GET").query_async(&mut c).await);
    assert!(e.contains("wrong number of arguments for 'get'"), "{e}");
    let e = error(
        redis::cmd("FLUSHALL")
            .arg("ASYNC")
            .query_async(&mut c)
            .await,
    );
    assert!(e.contains("unknown command 'FLUSHALL'"), "{e}");
    let e = error(
        redis::cmd("SET")
            .arg("k")
            .arg("v")
            .arg("NX")
            .query_async(&mut c)
            .await,
    );
    assert!(e.contains("SET NX is not supported"), "{e}");
    let e = error(
        redis::cmd("SET")
            .arg("k")
            .arg("v")
            .arg("EX")
            .arg(0)
            .query_async(&mut c)
            .await,
    );
    assert!(e.contains("invalid expire time"), "{e}");
    let e = error(redis::cmd("SELECT").arg(2).query_async(&mut c).await);
    assert!(e.contains("DB index is out of range"), "{e}");
    // Over the small group's limit but within the protocol's: the group refuses it.
    let e = error(c.set("k", vec![b'x'; 100_000]).await);
    assert!(e.contains("value is 100000 bytes, the limit is"), "{e}");
    let pong: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
    assert_eq!(pong, "PONG");
    // The big group takes it.
    let _: () = redis::cmd("SELECT")
        .arg(1)
        .query_async(&mut c)
        .await
        .unwrap();
    let _: () = c.set("k", vec![b'x'; 100_000]).await.unwrap();
    let len: usize = c.get::<_, Vec<u8>>("k").await.unwrap().len();
    assert_eq!(len, 100_000);

    // Over every group's limit: a protocol error, and that connection closes.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", node.port))
        .await
        .unwrap();
    raw.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000\r\n")
        .await
        .unwrap();
    let reply = read_to_close(&mut raw).await;
    assert!(
        reply.starts_with("-ERR Protocol error: bulk of 2000000 bytes is over the limit"),
        "{reply}"
    );
    let pong: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
    assert_eq!(pong, "PONG");
}

/// Everything the server writes until it closes the connection (within 5 s).
async fn read_to_close(raw: &mut tokio::net::TcpStream) -> String {
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut reply));
    read.await
        .expect("the server closes the connection")
        .expect("a clean close");
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_its_own_connection_only() {
    let node = start(&["--group", "g", "--source", "none"]).await;
    let mut good = connect(node.port, false, None).await.unwrap();
    let _: () = good.set("k", "v").await.unwrap();
    let garbage: [&[u8]; 5] = [
        b"*1\r\n$-5\r\n",
        b"*2\r\n:1\r\n:2\r\n",
        b"*99999999999\r\n",
        b"$5\r\nhello\r\n*1\r\n*1\r\n",
        &[b'A'; 70_000],
    ];
    for bytes in garbage {
        let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", node.port))
            .await
            .unwrap();
        raw.write_all(bytes).await.unwrap();
        let reply = read_to_close(&mut raw).await;
        // The last one is one long inline line; the fourth runs `$5` inline first.
        assert!(reply.contains("-ERR Protocol error: "), "{reply:?}");
        let v: String = good.get("k").await.unwrap();
        assert_eq!(v, "v");
    }
    // Inline commands, as redis-benchmark and telnet send them.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", node.port))
        .await
        .unwrap();
    raw.write_all(b"PING\r\nget k\r\nQUIT\r\n").await.unwrap();
    assert_eq!(read_to_close(&mut raw).await, "+PONG\r\n$1\r\nv\r\n+OK\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_serves_every_key_on_every_node() {
    let nodes = start_cluster().await;
    let mut conns = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        conns.push(connect(node.port, i == 1, None).await.unwrap());
    }
    // Written through each node in turn (so mostly through non-owners), read on all.
    let keys: Vec<String> = (0..30).map(|i| format!("key-{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let _: () = conns[i % 3].set(key, format!("v{i}")).await.unwrap();
    }
    for c in &mut conns {
        for (i, key) in keys.iter().enumerate() {
            let v: String = c.get(key).await.unwrap();
            assert_eq!(v, format!("v{i}"));
        }
        // A pipeline of GETs of all three owners' keys: answered in order.
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.get(key);
        }
        let got: Vec<String> = pipe.query_async(c).await.unwrap();
        assert_eq!(got, (0..30).map(|i| format!("v{i}")).collect::<Vec<_>>());
        // MGET of keys of all three owners in one command.
        let all: Vec<String> = c.mget(&keys).await.unwrap();
        assert_eq!(all, (0..30).map(|i| format!("v{i}")).collect::<Vec<_>>());
    }
    // Each node owns some: only owners hold keys (hot copies are off).
    let mut held = 0;
    for c in &mut conns {
        let n: i64 = redis::cmd("DBSIZE").query_async(c).await.unwrap();
        assert!(n > 0 && n < 30, "{n}");
        held += n;
    }
    assert_eq!(held, 30);
    // Removed through one node: gone on every node.
    let removed: i64 = conns[2].del(&keys[..10]).await.unwrap();
    assert_eq!(removed, 10);
    for c in &mut conns {
        let v: Vec<Option<String>> = c.mget(&keys[..12]).await.unwrap();
        assert_eq!(v[..10], vec![None; 10][..]);
        assert_eq!(v[10..], [Some("v10".to_owned()), Some("v11".to_owned())]);
    }
    let info: String = redis::cmd("INFO")
        .arg("peercache")
        .query_async(&mut conns[0])
        .await
        .unwrap();
    assert!(info.contains("members:3"), "{info}");
}
