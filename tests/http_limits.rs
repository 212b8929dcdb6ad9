//! The HTTP server's limits, against the real binary on loopback: slow or silent clients
//! are cut off by the header and body timeouts, connections beyond the limit are closed
//! at once without hurting other clients or peers, a client gone mid-body is told apart
//! from an oversize body, and SIGTERM ends the process promptly whatever clients hold.

use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

mod common;

use common::process::{Proc, free_ports};

/// A running `peercache serve` with one group `g` (values up to 1 MiB) over the demo
/// source.
struct Served {
    proc: Proc,
    /// HTTP address, host:port.
    http: String,
    /// gRPC address, host:port.
    grpc: String,
}

impl Served {
    async fn start(flags: &[&str]) -> Served {
        let [grpc, http] = free_ports::<2>();
        let (grpc, http) = (format!("127.0.0.1:{grpc}"), format!("127.0.0.1:{http}"));
        let log = std::env::var("TEST_SERVE_LOG").ok();
        let child = Command::new(env!("CARGO_BIN_EXE_peercache"))
            .args(["serve", "--grpc-addr", &grpc, "--http-addr", &http])
            .args(["--group", "g:1MiB", "--source", "demo"])
            .args(flags)
            // TEST_SERVE_LOG=peercache=debug shows the node's log.
            .env("RUST_LOG", log.as_deref().unwrap_or("warn"))
            .stdout(if log.is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("the peercache binary runs");
        let mut proc = Proc::new("peercache serve", child);
        proc.until_healthy(&format!("http://{http}")).await;
        Served { proc, http, grpc }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(&self.http).await.expect("connects")
    }
}

/// Reads until the server closes the connection (EOF or reset), for at most `limit`;
/// what was read and when it closed, or `None` if it stayed open.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<(String, Instant)> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read).await.ok()?;
    Some((String::from_utf8_lossy(&got).into_owned(), Instant::now()))
}

/// The value of the metric line starting with `series` (name and labels) in the
/// `/metrics` text.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A client on exactly one kept-alive connection, as a well-behaved client with a
/// connection pool of one.
struct OneConnection(hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>);

impl OneConnection {
    async fn open(served: &Served) -> Self {
        let io = hyper_util::rt::TokioIo::new(served.connect().await);
        let (send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        OneConnection(send)
    }

    /// GET `path`: the status and the whole body.
    async fn get(&mut self, path: &str) -> (u16, String) {
        use http_body_util::BodyExt;
        let req = hyper::Request::get(path)
            .header("host", "peercache")
            .body(http_body_util::Empty::new())
            .unwrap();
        self.0.ready().await.expect("the connection is open");
        let resp = self.0.send_request(req).await.expect("answered");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// The metric `series` now.
    async fn metric(&mut self, series: &str) -> Option<f64> {
        metric(&self.get("/metrics").await.1, series)
    }
}

/// The `/metrics` text, through a connection of its own.
async fn metrics_text(served: &Served) -> String {
    let r = reqwest::get(served.url("/metrics"))
        .await
        .expect("answered");
    r.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_or_silent_request_headers_are_cut_off_at_the_header_timeout() {
    let timeout = Duration::from_millis(500);
    let served = Served::start(&["--http-header-timeout", "500ms"]).await;
    // Nothing sent; headers started and never finished; one request answered and
    // the connection then left idle (keep-alive).
    let mut silent = served.connect().await;
    let mut half = served.connect().await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let mut idle = served.connect().await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    idle.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    let started = Instant::now();
    for (what, conn) in [
        ("silent", &mut silent),
        ("half-sent", &mut half),
        ("idle", &mut idle),
    ] {
        let Some((_, at)) = closed_within(conn, Duration::from_secs(5)).await else {
            panic!("the {what} connection was still open 5 s after a {timeout:?} header timeout");
        };
        let took = at - started;
        assert!(
            took < timeout + Duration::from_secs(2),
            "the {what} connection closed only after {took:?}"
        );
    }
    // The node serves on.
    assert_eq!(
        reqwest::get(served.url("/healthz")).await.unwrap().status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_finishes_is_answered_408_at_the_body_timeout() {
    let timeout = Duration::from_millis(500);
    let served = Served::start(&["--http-body-timeout", "500ms"]).await;
    let head = b"PUT /v1/groups/g/keys/k HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n";
    // One client stops after 10 bytes of a 1000-byte body; another trickles a byte
    // every 50 ms, which would take 50 s.
    let mut stalled = served.connect().await;
    stalled.write_all(head).await.unwrap();
    stalled.write_all(&[b'x'; 10]).await.unwrap();
    let trickled = served.connect().await;
    let (mut trickled_read, mut trickled_write) = trickled.into_split();
    trickled_write.write_all(head).await.unwrap();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        while trickled_write.write_all(b"x").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let Some((answer, at)) = closed_within(&mut stalled, Duration::from_secs(5)).await else {
        panic!("a stalled body held its connection 5 s past a {timeout:?} body timeout");
    };
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("body"),
        "the error names the body: {answer}"
    );
    assert!(at - started < timeout + Duration::from_secs(2));
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        trickled_read.read_to_end(&mut answer),
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        read.is_ok() && answer.starts_with("HTTP/1.1 408"),
        "a trickled body is cut off at the body timeout: {read:?} {answer}"
    );
    trickle.abort();
    let timed_out = metric(
        &metrics_text(&served).await,
        "peercache_http_request_seconds_count{op=\"set\",status=\"408\"}",
    );
    assert_eq!(timed_out, Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_body_is_a_failed_read_not_an_oversize_value() {
    let served = Served::start(&[]).await;
    let mut conn = served.connect().await;
    conn.write_all(b"PUT /v1/groups/g/keys/k HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    conn.write_all(&[b'x'; 10]).await.unwrap();
    // Gone: no more bytes will come (the half close still lets the answer through).
    conn.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("body read failed"), "{answer}");
    let text = metrics_text(&served).await;
    let series = |status: u16| {
        format!("peercache_http_request_seconds_count{{op=\"set\",status=\"{status}\"}}")
    };
    assert_eq!(metric(&text, &series(413)), None);
    assert_eq!(metric(&text, &series(400)), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_promptly_with_half_sent_requests_open() {
    // Default timeouts (30 s) and grace (3 s): the requests below would hold the
    // connections far longer than the grace.
    let mut served = Served::start(&[]).await;
    let mut half_body = served.connect().await;
    half_body
        .write_all(b"PUT /v1/groups/g/keys/k HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    half_body.write_all(&[b'x'; 10]).await.unwrap();
    let mut half_head = served.connect().await;
    half_head
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // A round trip on a third connection while the two wait.
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(served.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    served.proc.terminate();
    let exit = served.proc.exited_within(Duration::from_secs(6)).await;
    assert!(exit.success(), "graceful exit on SIGTERM: {exit}");
    drop((half_body, half_head));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed_while_clients_and_peers_are_served() {
    const LIMIT: usize = 8;
    const IDLE: usize = LIMIT + 3;
    let served = Served::start(&["--http-max-connections", "8"]).await;
    // A well-behaved client with a kept-alive connection; wait until it is the only one
    // the node counts (the health probes' connections are gone).
    let mut client = OneConnection::open(&served).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while client
        .metric("peercache_http_connections")
        .await
        .is_some_and(|open| open != 1.0)
    {
        assert!(Instant::now() < deadline, "the probes' connections linger");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Idle connections, one after another: the node accepts them in order, so the first
    // LIMIT - 1 fill the limit and the rest are closed at once.
    let mut idle = Vec::new();
    for _ in 0..IDLE {
        idle.push(served.connect().await);
    }
    for (i, conn) in idle.iter_mut().enumerate().skip(LIMIT - 1) {
        assert!(
            closed_within(conn, Duration::from_secs(5)).await.is_some(),
            "connection {i}, beyond the limit of {LIMIT}, was left open"
        );
    }
    // The well-behaved client is still served, and the node counts the others open (up
    // to the limit) and refused.
    let (status, value) = client.get("/v1/groups/g/keys/hello").await;
    assert_eq!(status, 200);
    assert!(!value.is_empty());
    assert_eq!(
        client.metric("peercache_http_connections").await,
        Some(LIMIT as f64)
    );
    assert_eq!(
        client
            .metric("peercache_http_connections_refused_total")
            .await,
        Some((IDLE - (LIMIT - 1)) as f64)
    );
    // Peers are not limited by the clients' connections.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", served.grpc))
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("a peer connects while the HTTP limit is reached");
    let metrics = std::sync::Arc::new(peercache::metrics::Metrics::new(peercache::Registry::new()));
    let peer = peercache::grpc::GrpcPeer::new("n0", channel, 1 << 21, metrics);
    use peercache::peer::PeerClient;
    let fetched = peer
        .get("g", "hello", Duration::from_secs(2))
        .await
        .unwrap();
    assert!(!fetched.value.is_empty());
    // Closed connections free their places for new clients.
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let fresh = reqwest::Client::new();
        if let Ok(r) = fresh.get(served.url("/healthz")).send().await {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(Instant::now() < deadline, "no place freed for a new client");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_limit_above_the_open_file_limit_is_warned_about() {
    use tokio::io::AsyncBufReadExt;
    let [grpc, http] = free_ports::<2>();
    // `ulimit -n` in the shell sets the hard limit too, so the node cannot raise it.
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", "ulimit -n 512 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_peercache"))
        .args(["serve", "--group", "g"])
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sh runs");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let warned = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("--http-max-connections 1024 leaves fewer than") {
                return line;
            }
        }
        panic!("the node exited without a warning");
    })
    .await
    .expect("a warning within 10 s");
    assert!(warned.contains("512"), "{warned}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_at_the_write_timeout() {
    let served = Served::start(&["--http-write-timeout", "500ms"]).await;
    let value = vec![b'v'; 512 << 10];
    let put = reqwest::Client::new()
        .put(served.url("/v1/groups/g/keys/big"))
        .body(value)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let mut watcher = OneConnection::open(&served).await;
    // Pipelined GETs of 512 KiB each, never read: far more than loopback buffers
    // hold, so the node's writes stall.
    let mut reader = served.connect().await;
    let get = b"GET /v1/groups/g/keys/big HTTP/1.1\r\nHost: x\r\n\r\n";
    reader.write_all(&get.repeat(64)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let open = watcher.metric("peercache_http_connections").await;
        if open == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a stalled reader still holds its connection 5 s after a 500 ms write timeout ({open:?} open)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What the node had written before it gave up, then the end.
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the connection ends (EOF or reset)");
    assert!(got.len() < 64 * (512 << 10), "{} bytes", got.len());
}
