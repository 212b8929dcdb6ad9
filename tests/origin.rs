//! `peercache serve` in front of an HTTP origin that misbehaves: bodies over the value
//! limit, keys that are not plain path segments, redirects, and an https origin whose
//! certificate only a private CA vouches for.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::IntoResponse;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

mod common;

use common::process::{Proc, TempDir, free_port};
use common::start_serve;

/// The group's value limit: `--group g:64MiB` leaves the default of 1 MiB.
const LIMIT: usize = 1 << 20;

/// Starts `peercache serve` alone with `--source source` and `extra` flags.
async fn serve(source: &str, extra: &[&str]) -> (Proc, String) {
    let grpc = format!("127.0.0.1:{}", free_port());
    let args = [
        "--group",
        "g:64MiB",
        "--source",
        source,
        "--grpc-addr",
        &grpc,
    ];
    start_serve(&[&args[..], extra].concat()).await
}

/// `GET /api?group=g&key=KEY`: the status and the body.
async fn get(url: &str, key: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!("{url}/api"))
        .query(&[("group", "g"), ("key", key)])
        .send()
        .await
        .expect("the node answers");
    (r.status().as_u16(), r.text().await.unwrap())
}

/// How one response of the streaming origin ended.
#[derive(Debug)]
struct Streamed {
    /// Body bytes the origin wrote before it finished or the reader went away.
    written: usize,
    /// Whether a write failed: the reader closed the connection.
    cut: bool,
}

/// An origin on a bare socket (so that every byte written is counted): the key
/// `big-cl` is 100 MiB with a Content-Length, `big` is 100 MiB delimited by the end of
/// the connection, `exact` is `LIMIT` bytes, `over` is `LIMIT + 1` bytes with a
/// Content-Length. Reports how each response ended.
async fn start_streaming_origin() -> (String, mpsc::UnboundedReceiver<Streamed>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                // The request head: enough to tell the key, up to its blank line.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = conn.read(&mut buf).await.unwrap();
                    assert!(n > 0, "request head cut short");
                    head.extend_from_slice(&buf[..n]);
                }
                let line = String::from_utf8_lossy(&head);
                let path = line.split(' ').nth(1).unwrap_or_default();
                let key = path.rsplit('/').next().unwrap_or_default();
                let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
                let (len, with_length) = match &*key {
                    "big-cl" => (100 << 20, true),
                    "big" => (100 << 20, false),
                    "exact" => (LIMIT, true),
                    "over" => (LIMIT + 1, true),
                    other => panic!("unexpected key {other:?}"),
                };
                let mut response = String::from("HTTP/1.1 200 OK\r\nConnection: close\r\n");
                if with_length {
                    response.push_str(&format!("Content-Length: {len}\r\n"));
                }
                response.push_str("\r\n");
                if conn.write_all(response.as_bytes()).await.is_err() {
                    let _ = tx.send(Streamed {
                        written: 0,
                        cut: true,
                    });
                    return;
                }
                let chunk = vec![b'x'; 64 << 10];
                let mut written = 0;
                while written < len {
                    let n = chunk.len().min(len - written);
                    if conn.write_all(&chunk[..n]).await.is_err() {
                        let _ = tx.send(Streamed { written, cut: true });
                        return;
                    }
                    written += n;
                }
                let _ = conn.shutdown().await;
                let _ = tx.send(Streamed {
                    written,
                    cut: false,
                });
            });
        }
    });
    (format!("http://{addr}/v/{{key}}"), rx)
}

/// How the origin's response for `key` ended (within 10 s).
async fn ended(streamed: &mut mpsc::UnboundedReceiver<Streamed>, key: &str) -> Streamed {
    tokio::time::timeout(Duration::from_secs(10), streamed.recv())
        .await
        .unwrap_or_else(|_| panic!("the origin's {key} response did not end"))
        .expect("the origin runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_body_over_the_value_limit_is_cut_off_and_answered_502() {
    let (source, mut streamed) = start_streaming_origin().await;
    let (_node, url) = serve(&source, &[]).await;

    let (status, body) = get(&url, "exact").await;
    assert_eq!(
        (status, body.len() > LIMIT),
        (200, true),
        "a value at the limit"
    );
    ended(&mut streamed, "exact").await;

    let (status, body) = get(&url, "over").await;
    assert_eq!(status, 502, "one byte over the limit: {body}");
    assert!(
        body.contains(&format!("exceeds the {LIMIT}-byte limit")),
        "{body}"
    );
    ended(&mut streamed, "over").await;

    for key in ["big-cl", "big"] {
        let (status, body) = tokio::time::timeout(Duration::from_secs(20), get(&url, key))
            .await
            .expect("the node answers without reading 100 MiB");
        assert_eq!(status, 502, "{key}: {body}");
        assert!(
            body.contains(&format!("exceeds the {LIMIT}-byte limit")),
            "{key}: {body}"
        );
        let ended = ended(&mut streamed, key).await;
        eprintln!("{key}: the origin wrote {} body bytes", ended.written);
        // What the origin could write is the value limit plus the socket buffers on both
        // sides (a few MiB on loopback), far from the 100 MiB it offered.
        assert!(
            ended.cut && ended.written < 24 << 20,
            "{key}: the node kept reading: {ended:?}"
        );
    }
}

/// An origin that records the path of every request and answers 200 with it.
async fn start_recording_origin() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route(
            "/r/{key}",
            axum::routing::get(|| async {
                (StatusCode::FOUND, [(header::LOCATION, "/target")], "moved")
            }),
        )
        .fallback(
            |State(seen): State<Arc<Mutex<Vec<String>>>>, uri: Uri| async move {
                seen.lock().push(uri.path().to_owned());
                format!("path {}", uri.path()).into_response()
            },
        )
        .with_state(seen.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_reach_the_origin_as_one_literal_path_segment() {
    let (origin, seen) = start_recording_origin().await;
    let (_node, url) = serve(&format!("{origin}/users/{{key}}/data"), &[]).await;
    let keys = [
        ".", "..", "%2e%2e", "%2E%2E", ".%2e", "a/b", "a?b", "a#b", "a@b", "a:b", "../x",
    ];
    for key in keys {
        seen.lock().clear();
        let (status, body) = get(&url, key).await;
        let paths = seen.lock().clone();
        if key == "." || key == ".." {
            // No spelling of these is one literal segment to a URL parser: refused.
            assert_eq!(status, 400, "{key:?}: {body} (origin saw {paths:?})");
            assert!(body.contains("path segment"), "{key:?}: {body}");
            assert!(paths.is_empty(), "{key:?} reached the origin: {paths:?}");
            continue;
        }
        assert_eq!(status, 200, "{key:?}: {body} (origin saw {paths:?})");
        let [path] = paths.as_slice() else {
            panic!("{key:?}: origin saw {paths:?}");
        };
        let segments: Vec<String> = path
            .split('/')
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(segments, ["", "users", key, "data"], "{key:?} as {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_only_when_allowed() {
    let (origin, seen) = start_recording_origin().await;
    let source = format!("{origin}/r/{{key}}");
    let (_node, url) = serve(&source, &[]).await;
    let (status, body) = get(&url, "k").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("redirect"), "{body}");
    assert!(seen.lock().is_empty(), "followed to {:?}", seen.lock());

    let (_node, url) = serve(&source, &["--origin-redirects", "1"]).await;
    let (status, body) = get(&url, "k").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("path /target"), "{body}");
    assert_eq!(*seen.lock(), ["/target"]);
}

/// An https origin on 127.0.0.1 answering `tls:<path>`, its certificate (for
/// `localhost`) signed by a CA made here; returns the URL template and the CA's PEM.
async fn start_tls_origin() -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (conn, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that does not trust the CA ends the handshake: not an error here.
                let Ok(tls) = acceptor.accept(conn).await else {
                    return;
                };
                let service = hyper::service::service_fn(|req: hyper::Request<_>| async move {
                    let body = format!("tls:{}", req.uri().path());
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from(body)),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (format!("https://localhost:{port}/v/{{key}}"), ca.pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_origins_are_trusted_through_the_given_ca() {
    let (source, ca_pem) = start_tls_origin().await;
    let dir = TempDir::new("origin-ca");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();

    let (_node, url) = serve(&source, &["--origin-ca", ca_file.to_str().unwrap()]).await;
    let (status, body) = get(&url, "k").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""value":"tls:/v/k""#), "{body}");

    // Without the CA the origin's certificate is unknown: a failed load, not a value.
    let (_node, url) = serve(&source, &[]).await;
    let (status, body) = get(&url, "k").await;
    assert_eq!(status, 502, "{body}");
}
