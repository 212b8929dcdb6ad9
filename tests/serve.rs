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
        no_weight.contains("--weight must be at least 1"),
        "{no_weight}"
    );
}
