//! Plain-HTTP requests on hyper's own HTTP/1.1 connections: an idle stack of
//! keep-alive connections per target, one request at a time on each.
//!
//! loadgen shares the machine's cores with the nodes it measures, so what it spends per
//! request is taken from them. Through `reqwest` (URL parsing, its pool, its layers) a
//! remote hit cost loadgen 20 µs of CPU in a closed loop of 32 and 43 µs in an open
//! loop at 15,000 requests/s; on these connections 12 and 35 µs, and the closed loop's
//! rate rose from 28,400 to 36,100 requests/s (reports/open-loop.md). https targets
//! still go through `reqwest` (client.rs).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HOST, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::client::Failure;
use crate::keys::Op;
use crate::pool::{Idle, within};

/// One target: where it listens and its idle connections.
struct Target {
    /// `host:port`.
    addr: String,
    /// The `Host` header.
    host: HeaderValue,
    idle: Idle<SendRequest<Full<Bytes>>>,
}

/// HTTP/1.1 clients of plain-HTTP targets.
pub struct Http1 {
    targets: Vec<Target>,
    /// `/v1/groups/{group}/keys/`.
    prefix: String,
    timeout: Duration,
}

impl Http1 {
    /// A client of `urls` (all `http://host:port`) for `group`; each request ends after
    /// `timeout`, its connection included.
    pub fn new(urls: &[String], group: &str, timeout: Duration) -> anyhow::Result<Http1> {
        let targets = urls
            .iter()
            .map(|url| {
                let authority = url
                    .strip_prefix("http://")
                    .filter(|a| !a.is_empty() && !a.contains('/'))
                    .ok_or_else(|| anyhow::anyhow!("{url:?} is not http://host:port"))?;
                Ok(Target {
                    addr: authority.to_owned(),
                    host: HeaderValue::from_str(authority)?,
                    idle: Idle::default(),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Http1 {
            targets,
            prefix: format!("/v1/groups/{group}/keys/"),
            timeout,
        })
    }

    /// Sends `op` on `key` to target `to` and reads the whole answer. `Err` is the
    /// failure's kind: `timeout`, `connect`, `io` or `http <status>`.
    pub async fn call(&self, to: usize, op: Op, key: &str, value: &Bytes) -> Result<(), Failure> {
        within(self.timeout, self.send(to, op, key, value)).await
    }

    async fn send(&self, to: usize, op: Op, key: &str, value: &Bytes) -> Result<(), Failure> {
        let target = &self.targets[to];
        let (method, body) = match op {
            Op::Get => (Method::GET, Bytes::new()),
            Op::Set => (Method::PUT, value.clone()),
            Op::Remove => (Method::DELETE, Bytes::new()),
        };
        let request = || {
            let mut req = Request::new(Full::new(body.clone()));
            *req.method_mut() = method.clone();
            *req.uri_mut() = format!("{}{key}", self.prefix)
                .parse()
                .expect("a key name is a valid path");
            req.headers_mut().insert(HOST, target.host.clone());
            req
        };
        // A kept connection the node has closed since (an idle timeout, a restart)
        // fails before anything is sent: that request goes again on a new one.
        let (mut conn, response) = match target.idle.take(|conn| !conn.is_closed()) {
            Some(mut conn) => match conn.try_send_request(request()).await {
                Ok(response) => (conn, response),
                Err(mut e) if e.error().is_canceled() || e.error().is_closed() => {
                    let retry = e.take_message().unwrap_or_else(request);
                    let mut conn = target.connect().await?;
                    let response = conn.send_request(retry).await.map_err(io)?;
                    (conn, response)
                }
                Err(e) => return Err(io(e.into_error())),
            },
            None => {
                let mut conn = target.connect().await?;
                let response = conn.send_request(request()).await.map_err(io)?;
                (conn, response)
            }
        };
        let status = response.status();
        // Read the whole body: a request is done when its value has arrived.
        response.into_body().collect().await.map_err(io)?;
        if conn.ready().await.is_ok() {
            target.idle.put(conn);
        }
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("http {}", status.as_u16()))
        }
    }
}

impl Target {
    /// A new connection, driven by a task of its own until either side closes it.
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let stream = TcpStream::connect(&self.addr)
            .await
            .map_err(|_| Failure::from("connect"))?;
        stream
            .set_nodelay(true)
            .map_err(|_| Failure::from("connect"))?;
        let (send, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| Failure::from("connect"))?;
        tokio::spawn(async move {
            // Its end is the node closing the connection, or this side dropping it.
            let _ = conn.await;
        });
        Ok(send)
    }
}

/// A failed exchange on an open connection.
fn io(_: hyper::Error) -> Failure {
    "io".into()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::SocketAddr;
    use std::sync::Arc;

    use axum::Router;
    use axum::extract::{ConnectInfo, Path, State};
    use axum::http::{Method, StatusCode};
    use axum::routing::get;
    use parking_lot::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// What the test server saw: each request's method, key and body, and the client
    /// ports it came from (one per connection).
    #[derive(Default)]
    struct Seen {
        requests: Vec<(Method, String, Bytes)>,
        ports: BTreeSet<u16>,
    }

    /// A node's key API on loopback: `key:1` is found, every other key is not.
    async fn node() -> (String, Arc<Mutex<Seen>>) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let handler = |State(seen): State<Arc<Mutex<Seen>>>,
                       ConnectInfo(from): ConnectInfo<SocketAddr>,
                       method: Method,
                       Path((group, key)): Path<(String, String)>,
                       body: Bytes| async move {
            let mut s = seen.lock();
            s.ports.insert(from.port());
            s.requests
                .push((method.clone(), format!("{group}/{key}"), body));
            match (method, key.as_str()) {
                (Method::GET, "key:1") => (StatusCode::OK, "v"),
                (Method::GET, _) => (StatusCode::NOT_FOUND, ""),
                _ => (StatusCode::OK, ""),
            }
        };
        let app = Router::new()
            .route(
                "/v1/groups/{group}/keys/{key}",
                get(handler).put(handler).delete(handler),
            )
            .with_state(seen.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        });
        (url, seen)
    }

    #[tokio::test]
    async fn requests_carry_their_method_key_and_value_over_one_kept_connection() {
        let (url, seen) = node().await;
        let http = Http1::new(&[url], "g", Duration::from_secs(5)).unwrap();
        let value = Bytes::from_static(b"a value");
        assert_eq!(http.call(0, Op::Get, "key:1", &value).await, Ok(()));
        assert_eq!(
            http.call(0, Op::Get, "key:2", &value).await,
            Err("http 404".to_owned())
        );
        assert_eq!(http.call(0, Op::Set, "key:3", &value).await, Ok(()));
        assert_eq!(http.call(0, Op::Remove, "key:3", &value).await, Ok(()));
        for _ in 0..20 {
            http.call(0, Op::Get, "key:1", &value).await.unwrap();
        }
        let seen = seen.lock();
        let first: Vec<_> = seen.requests[..4]
            .iter()
            .map(|(m, k, b)| (m.as_str(), k.as_str(), b.as_ref()))
            .collect();
        assert_eq!(
            first,
            [
                ("GET", "g/key:1", &b""[..]),
                ("GET", "g/key:2", b""),
                ("PUT", "g/key:3", b"a value"),
                ("DELETE", "g/key:3", b""),
            ]
        );
        assert_eq!(seen.requests.len(), 24);
        assert_eq!(seen.ports.len(), 1, "one request at a time: one connection");
    }

    #[tokio::test]
    async fn concurrent_requests_each_get_a_connection_and_keep_it() {
        let (url, seen) = node().await;
        let http = Arc::new(Http1::new(&[url], "g", Duration::from_secs(5)).unwrap());
        for _ in 0..3 {
            let calls = (0..8).map(|_| {
                let http = http.clone();
                tokio::spawn(async move { http.call(0, Op::Get, "key:1", &Bytes::new()).await })
            });
            for call in futures::future::join_all(calls).await {
                assert_eq!(call.unwrap(), Ok(()));
            }
        }
        let seen = seen.lock();
        assert_eq!(seen.requests.len(), 24);
        assert!(
            (2..=8).contains(&seen.ports.len()),
            "at most one connection per request in flight, reused: {}",
            seen.ports.len()
        );
    }

    /// A server that answers one request per connection and then closes it, after the
    /// client has put the connection back.
    async fn one_per_connection() -> (String, Arc<Mutex<usize>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(Mutex::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                *count.lock() += 1;
                tokio::spawn(async move {
                    let mut buf = vec![0; 4096];
                    let mut read = 0;
                    while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf[read..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read += n,
                        }
                    }
                    let _ = socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nv")
                        .await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                });
            }
        });
        (url, accepted)
    }

    #[tokio::test]
    async fn a_kept_connection_the_server_closed_is_replaced_without_an_error() {
        let (url, accepted) = one_per_connection().await;
        let http = Http1::new(&[url], "g", Duration::from_secs(5)).unwrap();
        for _ in 0..3 {
            assert_eq!(http.call(0, Op::Get, "key:1", &Bytes::new()).await, Ok(()));
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        assert_eq!(*accepted.lock(), 3);
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_a_timeout_and_no_server_a_connect_failure() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent = format!("http://{}", listener.local_addr().unwrap());
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let http = Http1::new(&[silent, closed], "g", Duration::from_millis(200)).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(
            http.call(0, Op::Get, "key:1", &Bytes::new()).await,
            Err("timeout".to_owned())
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(
            http.call(1, Op::Get, "key:1", &Bytes::new()).await,
            Err("connect".to_owned())
        );
        drop(listener);
    }

    #[test]
    fn a_target_that_is_not_plain_http_is_refused() {
        for url in ["https://127.0.0.1:1", "http://", "http://h:1/path"] {
            assert!(Http1::new(&[url.to_owned()], "g", Duration::from_secs(1)).is_err());
        }
    }
}
