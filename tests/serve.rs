//! The `peercache serve` binary: flags and env vars, an HTTP origin as the source, and a
//! graceful stop on SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;

mod common;

use common::process::{Proc, free_port};

/// An origin: `missing` is 404, `boom` is 500, anything else `origin:<key>`.
async fn start_origin() -> String {
    let app = Router::new().route(
        "/v/{key}",
        get(|Path(key): Path<String>| async move {
            match key.as_str() {
                "missing" => Err(StatusCode::NOT_FOUND),
                "boom" => Err(StatusCode::INTERNAL_SERVER_ERROR),
                _ => Ok(format!("origin:{key}")),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v/{{key}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reads_through_an_http_origin_and_stops_on_sigterm() {
    let origin = start_origin().await;
    let (grpc, http) = (format!("127.0.0.1:{}", free_port()), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_peercache"))
        .args([
            "serve",
            "--grpc-addr",
            &grpc,
            "--peers",
            &grpc,
            "--group",
            "g:1MiB",
        ])
        .args(["--source", &origin])
        // Flags also come from the environment.
        .env("PEERCACHE_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("PEERCACHE_TTL", "60s")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("the peercache binary runs");
    let mut child = Proc::new("peercache serve", child);
    let url = format!("http://127.0.0.1:{http}");
    child.until_healthy(&url).await;

    let get = |key: &str| {
        let u = format!("{url}/v1/groups/g/keys/{key}");
        async move {
            let r = reqwest::get(u).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("hello").await, (200, "origin:hello".into()));
    assert_eq!(get("missing").await.0, 404);
    let (status, body) = get("boom").await;
    assert_eq!(status, 502);
    assert!(
        body.contains("500"),
        "the origin's failure is in the message: {body}"
    );
    let ring: serde_json::Value = serde_json::from_str(
        &reqwest::get(format!("{url}/v1/ring"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ring["members"].as_array().unwrap().len(), 1);
    assert_eq!(ring["members"][0]["address"].as_str(), Some(grpc.as_str()));
    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("peercache_loads_total{group=\"g\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("peercache_cache_bytes{group=\"g\",cache=\"main\"}"));
    assert!(metrics.contains("peercache_http_request_seconds_count{op=\"get\",status=\"200\"} 1"));

    child.terminate();
    let exit = child.exited_within(Duration::from_secs(5)).await;
    assert!(exit.success(), "graceful exit on SIGTERM: {exit}");
}

#[test]
fn serve_refuses_a_peer_list_without_itself() {
    let out = Command::new(env!("CARGO_BIN_EXE_peercache"))
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:1",
            "--peers",
            "127.0.0.1:2",
            "--group",
            "g",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must include this node's address"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_peercache"))
        .args(["serve", "--group", "g:lots"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("group capacity"));
}

#[test]
fn serve_refuses_bad_membership_flags() {
    let refused = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_peercache"))
            .args(["serve", "--group", "g", "--grpc-addr", "127.0.0.1:1"])
            .args(args)
            .env_remove("PEERCACHE_ETCD")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let both = refused(&["--peers", "127.0.0.1:1", "--etcd", "http://127.0.0.1:2379"]);
    assert!(both.contains("cannot be used with"), "{both}");
    let id_alone = refused(&["--node-id", "a"]);
    assert!(id_alone.contains("--etcd"), "{id_alone}");
    let no_scheme = refused(&["--etcd", "127.0.0.1:2379"]);
    assert!(
        no_scheme.contains("expected http://HOST:PORT"),
        "{no_scheme}"
    );
    let bad_id = refused(&["--etcd", "http://127.0.0.1:2379", "--node-id", "a/b"]);
    assert!(bad_id.contains("--node-id"), "{bad_id}");
    let no_weight = refused(&["--weight", "0"]);
    assert!(
        no_weight.contains("--weight") && no_weight.contains("must be at least 1"),
        "{no_weight}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_configuration_mistakes() {
    // Each case its own ports, as they run side by side.
    let [p1, p2, p3, p4, p5, p6, other, etcd] = common::process::free_ports::<8>();
    let local = |p: u16| format!("127.0.0.1:{p}");
    let args = |extra: &[&str]| -> Vec<String> {
        ["--group", "g"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let etcd = format!("http://127.0.0.1:{etcd}");
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        // Weights above the ring's cap are refused, not cut down.
        (
            args(&["--grpc-addr", &local(p1), "--weight", "1001"]),
            vec!["--weight", "cap of 1000"],
        ),
        (
            args(&[
                "--grpc-addr",
                &local(p2),
                "--peers",
                &format!("{}=1001", local(p2)),
            ]),
            vec!["--peers", "cap of 1000"],
        ),
        // A static membership takes weights from its list, the same on every node.
        (
            args(&[
                "--grpc-addr",
                &local(p3),
                "--peers",
                &format!("{},{}", local(p3), local(other)),
                "--weight",
                "2",
            ]),
            vec!["--weight", "ADDR=WEIGHT"],
        ),
        // A wildcard address is not one peers can dial, nor one to write into etcd.
        (
            args(&["--grpc-addr", &format!("0.0.0.0:{p4}"), "--etcd", &etcd]),
            vec!["0.0.0.0", "--advertise"],
        ),
        (
            args(&["--grpc-addr", &format!("[::]:{p5}"), "--etcd", &etcd]),
            vec!["[::]", "--advertise"],
        ),
        (
            args(&[
                "--grpc-addr",
                &format!("0.0.0.0:{p6}"),
                "--peers",
                &format!("0.0.0.0:{p6}"),
            ]),
            vec!["0.0.0.0", "--advertise"],
        ),
    ];
    // Concurrently, so that every case's outcome is known within 10 s.
    let outcomes =
        futures::future::join_all(cases.iter().map(|(args, _)| common::serve_refused(args)));
    let failures: Vec<String> = cases
        .iter()
        .zip(outcomes.await)
        .filter_map(|((args, wanted), outcome)| match outcome {
            Ok(err) if wanted.iter().all(|w| err.contains(w)) => None,
            Ok(err) => Some(format!("{args:?}: refused without {wanted:?}: {err}")),
            Err(what) => Some(format!("{args:?}: {what}")),
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_member_weights_from_the_peer_list() {
    let [grpc, other] = common::process::free_ports::<2>();
    let me = format!("127.0.0.1:{grpc}");
    let peers = format!("{me}=3,127.0.0.1:{other}=2");
    let (_node, url) =
        common::start_serve(&["--group", "g", "--grpc-addr", &me, "--peers", &peers]).await;
    let ring = reqwest::get(format!("{url}/v1/ring"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ring: serde_json::Value = serde_json::from_str(&ring).unwrap();
    let mut weights: Vec<(String, u64)> = ring["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let addr = m["address"].as_str().unwrap().to_owned();
            (addr, m["weight"].as_u64().unwrap())
        })
        .collect();
    weights.sort();
    let mut want = [(me, 3), (format!("127.0.0.1:{other}"), 2)];
    want.sort();
    assert_eq!(weights, want, "{ring}");
}
