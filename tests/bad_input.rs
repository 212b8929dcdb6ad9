//! Bad input on every surface gets a clear error, and the node keeps serving others.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, Db, http_get};
use peercache::grpc::GrpcPeer;
use peercache::peer::{PeerClient, PeerFailure};
use peercache::{Error, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAX_KEY: usize = 64;
const MAX_VALUE: usize = 1024;

fn small_limits(db: &Db) -> impl Fn(usize, &Registry) + '_ {
    move |_, reg| {
        reg.group("g")
            .capacity(1 << 20)
            .max_key_len(MAX_KEY)
            .max_value_len(MAX_VALUE)
            .loader(db.clone())
            .build()
            .unwrap();
    }
}

async fn status_and_error(req: reqwest::RequestBuilder) -> (u16, String) {
    let r = req.send().await.expect("answered");
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_rejects_bad_requests_clearly() {
    let db = Db::default();
    let cluster = Cluster::start(2, small_limits(&db)).await;
    let base = &cluster.nodes[0].url;
    let c = reqwest::Client::new();
    let long_key = "k".repeat(MAX_KEY + 1);
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (c.get(format!("{base}/api?group=g&key=")), 400, "empty key"),
        (c.get(format!("{base}/v1/groups/g/keys/")), 400, "empty key"),
        (
            c.put(format!("{base}/v1/groups/g/keys/")).body("x"),
            400,
            "empty key",
        ),
        (
            c.get(format!("{base}/api?group=g&key={long_key}")),
            414,
            "limit is 64",
        ),
        (
            c.get(format!("{base}/v1/groups/g/keys/{long_key}")),
            414,
            "limit is 64",
        ),
        (
            c.delete(format!("{base}/v1/groups/g/keys/{long_key}")),
            414,
            "limit is 64",
        ),
        (
            c.put(format!("{base}/v1/groups/g/keys/a"))
                .body(vec![0u8; MAX_VALUE + 1]),
            413,
            "1024",
        ),
        (
            c.get(format!("{base}/api?group=nope&key=a")),
            404,
            "unknown group",
        ),
        (
            c.get(format!("{base}/v1/groups/nope/keys/a")),
            404,
            "unknown group",
        ),
        (
            c.put(format!("{base}/v1/groups/nope/keys/a")).body("x"),
            404,
            "unknown group",
        ),
        (c.get(format!("{base}/api")), 400, "required"),
        (c.get(format!("{base}/api?group=g")), 400, "required"),
        (
            c.get(format!("{base}/v1/groups/g/keys/%FF%FE")),
            400,
            "UTF-8",
        ),
        (
            c.put(format!("{base}/v1/groups/g/keys/a?ttl=soon"))
                .body("x"),
            400,
            "ttl",
        ),
        (
            c.put(format!("{base}/v1/groups/g/keys/a?ttl=0s")).body("x"),
            400,
            "ttl",
        ),
        (c.get(format!("{base}/v2/nothing")), 404, "no such route"),
        (
            c.post(format!("{base}/v1/groups/g/keys/a")).body("x"),
            405,
            "",
        ),
    ];
    for (req, want, text) in cases {
        let described = format!(
            "{:?}",
            req.try_clone().unwrap().build().unwrap().url().as_str()
        );
        let (status, body) = status_and_error(req).await;
        assert_eq!(status, want, "{described}: {body}");
        assert!(
            body.contains(text),
            "{described}: {body:?} should mention {text:?}"
        );
        // Every error is JSON with a message, except axum's own 405.
        if want != 405 {
            let json: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
            assert!(json["error"].is_string());
        }
    }
    // A huge body is refused from its announced length, before it is sent.
    let mut s = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(b"PUT /v1/groups/g/keys/a HTTP/1.1\r\nhost: x\r\ncontent-length: 8388608\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut head))
        .await
        .expect("answered before the body was sent")
        .unwrap();
    assert!(
        head[..n].starts_with(b"HTTP/1.1 413"),
        "{:?}",
        String::from_utf8_lossy(&head[..n])
    );
    // The source's own errors: not found is 404, a failure 502 with its message.
    db.write("gone", None);
    let (status, body) = status_and_error(c.get(format!("{base}/v1/groups/g/keys/gone"))).await;
    assert_eq!(
        (status, body.contains("gone was deleted")),
        (404, true),
        "{body}"
    );
    // Still serving.
    assert_eq!(
        http_get(&format!("{base}/v1/groups/g/keys/fine")).await,
        (200, Bytes::from("v:fine"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_rejects_bad_requests_and_survives_garbage() {
    let db = Db::default();
    let cluster = Cluster::start(1, small_limits(&db)).await;
    let node = &cluster.nodes[0];
    // Garbage on both ports, from several connections; each is closed, nothing else.
    for port_of in [
        node.id.clone(),
        node.url.trim_start_matches("http://").to_owned(),
    ] {
        for junk in [
            &b"\x00\x01\x02garbage\r\n\r\n"[..],
            &[0xffu8; 4096][..],
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff",
        ] {
            let mut s = tokio::net::TcpStream::connect(&port_of).await.unwrap();
            let _ = s.write_all(junk).await;
            let mut sink = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
            assert!(
                read.is_ok(),
                "the server closes a connection that sent junk to {port_of}"
            );
        }
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.id))
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let metrics = std::sync::Arc::new(peercache::metrics::Metrics::new(node.groups.clone()));
    let limit = peercache::grpc::message_limit(&node.groups);
    let peer = GrpcPeer::new("n0", channel, limit, metrics);
    let t = Duration::from_secs(2);
    let answered = |r: Result<_, PeerFailure>| match r {
        Err(PeerFailure::Answered(e)) => e,
        other => panic!("expected the peer's error, got {other:?}"),
    };
    assert_eq!(
        answered(peer.get("g", "", t).await.map(drop)),
        Error::EmptyKey
    );
    assert_eq!(
        answered(peer.get("nope", "a", t).await.map(drop)),
        Error::UnknownGroup("nope".into())
    );
    assert!(matches!(
        answered(peer.get("g", &"k".repeat(65), t).await.map(drop)),
        Error::KeyTooLong { len: 65, max: 64 }
    ));
    let big = Bytes::from(vec![1u8; MAX_VALUE + 1]);
    assert!(matches!(
        answered(peer.set("g", "a", big, None, t).await.map(drop)),
        Error::ValueTooLarge { .. }
    ));
    assert!(matches!(
        answered(peer.remove("g", "", t).await.map(drop)),
        Error::EmptyKey
    ));
    assert!(matches!(
        answered(peer.invalidate("g", "", 1, t).await),
        Error::EmptyKey
    ));
    db.write("gone", None);
    assert!(matches!(
        answered(peer.get("g", "gone", t).await.map(drop)),
        Error::NotFound(_)
    ));
    // A codec the node does not speak, through the raw generated client.
    let mut raw = common::raw_peer(&node.id).await;
    let status = raw
        .set(peercache::proto::SetRequest {
            group: "g".into(),
            key: "a".into(),
            value: Bytes::from_static(b"x"),
            codec: peercache::proto::Codec::Zstd as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    // And it still serves, over gRPC and HTTP.
    assert_eq!(peer.get("g", "ok", t).await.unwrap().value, "v:ok");
    assert_eq!(
        http_get(&format!("{}/v1/groups/g/keys/ok", node.url))
            .await
            .0,
        200
    );
}
