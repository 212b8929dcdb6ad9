//! One `peercache serve` on loopback under every abuse at once: 1,000 idle connections,
//! 100 slow-loris clients, 20 parallel oversize gRPC messages and an origin body of
//! 100 MiB, while a well-behaved client keeps reading. Its gets all succeed, the node's
//! resident memory stays under a stated bound, and it stops within 5 s of SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::get;
use bytes::Bytes;
use futures::future::join_all;
use peercache::proto::SetRequest;
use peercache::proto::peer_client::PeerClient;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

mod common;

use common::process::free_port;
use common::start_serve;

const IDLE: usize = 1_000;
const SLOW_LORIS: usize = 100;
const OVERSIZE: usize = 20;
/// Each oversize message: 16 times the group's value limit.
const OVERSIZE_BYTES: usize = 16 << 20;
const ORIGIN_BODY: usize = 100 << 20;
const GOOD_GETS: usize = 200;
/// The bound on the node's resident memory through it all.
const RSS_BOUND: u64 = 128 << 20;

/// An origin: `value of KEY` for every key but `huge`, which is 100 MiB.
async fn start_origin() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/v/{key}",
        get(|Path(key): Path<String>| async move {
            if key != "huge" {
                return Body::from(format!("value of {key}"));
            }
            let chunk = Bytes::from(vec![b'x'; 64 << 10]);
            let chunks = ORIGIN_BODY / chunk.len();
            let body = futures::stream::iter(
                (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
            );
            Body::from_stream(body)
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v/{{key}}")
}

/// The resident memory of process `pid`, in bytes (VmRSS in /proc/PID/status).
fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A client that sends its request head one byte every 200 ms until `stop`.
async fn slow_loris(addr: String, stop: Arc<AtomicBool>) {
    let Ok(mut conn) = TcpStream::connect(&addr).await else {
        return;
    };
    let head = b"GET /api?group=g&key=loris HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let bytes = head.iter().copied().chain(std::iter::repeat(b'a'));
    for byte in bytes {
        if stop.load(Relaxed) || conn.write_all(&[byte]).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_under_abuse_keeps_serving_a_well_behaved_client() {
    // 1,100 sockets here and as many in the node (which raises its own limit).
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let origin = start_origin().await;
    let grpc = format!("127.0.0.1:{}", free_port());
    let args = [
        "--group",
        "g:64MiB",
        "--source",
        &origin,
        "--grpc-addr",
        &grpc,
        "--http-max-connections",
        "2048",
    ];
    let (mut node, url) = start_serve(&args).await;
    let pid = node.child.id();
    let http_addr = url.trim_start_matches("http://").to_owned();

    let peak = Arc::new(AtomicU64::new(rss(pid).unwrap_or(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let (peak, stop) = (peak.clone(), stop.clone());
        async move {
            while !stop.load(Relaxed) {
                if let Some(now) = rss(pid) {
                    peak.fetch_max(now, Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    // The well-behaved client connects first and keeps its connection.
    let good = reqwest::Client::new();
    let good_get = |key: String| {
        let (good, url) = (good.clone(), url.clone());
        async move {
            let r = good
                .get(format!("{url}/v1/groups/g/keys/{key}"))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .map_err(|e| format!("{key}: {e}"))?;
            let status = r.status().as_u16();
            let body = r.text().await.map_err(|e| format!("{key}: {e}"))?;
            match (status, body == format!("value of {key}")) {
                (200, true) => Ok(()),
                _ => Err(format!("{key}: {status} {body:?}")),
            }
        }
    };
    good_get("first".into()).await.expect("before the abuse");

    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(
            TcpStream::connect(&http_addr)
                .await
                .expect("an idle connection"),
        );
    }
    let loris: Vec<_> = (0..SLOW_LORIS)
        .map(|_| tokio::spawn(slow_loris(http_addr.clone(), stop.clone())))
        .collect();
    let oversize_value = Bytes::from(vec![b'x'; OVERSIZE_BYTES]);
    let oversize = (0..OVERSIZE).map(|i| {
        let (grpc, value) = (grpc.clone(), oversize_value.clone());
        async move {
            let mut raw = PeerClient::connect(format!("http://{grpc}"))
                .await
                .expect("a gRPC connection")
                .max_encoding_message_size(usize::MAX);
            let set = SetRequest {
                group: "g".into(),
                key: format!("big{i}"),
                value,
                deadline_ms: 10_000,
                ..SetRequest::default()
            };
            raw.set(set).await.map(drop).map_err(|s| s.code())
        }
    });
    let huge = async {
        let r = reqwest::Client::new()
            .get(format!("{url}/v1/groups/g/keys/huge"))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .expect("an answer for the huge key");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    };
    let reads = async {
        let mut failed = Vec::new();
        for i in 0..GOOD_GETS {
            if let Err(e) = good_get(format!("k{i}")).await {
                failed.push(e);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        failed
    };
    let started = Instant::now();
    let (refused, (huge_status, huge_body), failed) = tokio::join!(join_all(oversize), huge, reads);
    let abuse_took = started.elapsed();

    assert!(
        failed.is_empty(),
        "the well-behaved client's failed gets: {failed:?}"
    );
    for r in &refused {
        assert_eq!(*r, Err(tonic::Code::OutOfRange), "an oversize Set");
    }
    assert_eq!(huge_status, 502, "{huge_body}");
    assert!(huge_body.contains("limit"), "{huge_body}");
    let open_loris = loris.iter().filter(|t| !t.is_finished()).count();

    // SIGTERM with the idle and slow clients still connected.
    let term = Instant::now();
    node.terminate();
    let status = node.exited_within(Duration::from_secs(5)).await;
    let stopped_in = term.elapsed();
    stop.store(true, Relaxed);
    sampler.await.unwrap();
    drop(idle);
    let peak = peak.load(Relaxed);
    eprintln!(
        "abuse: {GOOD_GETS} good gets ok while {IDLE} idle, {SLOW_LORIS} slow-loris ({open_loris} still open at the end), {OVERSIZE} × {} MiB gRPC Sets refused, a {} MiB origin body answered {huge_status}; {:.1} s; peak VmRSS {:.1} MiB (bound {} MiB); stopped {:.2} s after SIGTERM ({status})",
        OVERSIZE_BYTES >> 20,
        ORIGIN_BODY >> 20,
        abuse_took.as_secs_f64(),
        peak as f64 / (1 << 20) as f64,
        RSS_BOUND >> 20,
        stopped_in.as_secs_f64(),
    );
    assert!(peak > 0, "VmRSS was read");
    assert!(
        peak < RSS_BOUND,
        "peak VmRSS {peak} bytes, over the bound of {RSS_BOUND}"
    );
    assert!(status.success(), "a clean exit: {status}");
}
