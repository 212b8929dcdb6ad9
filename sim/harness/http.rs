//! Talking HTTP to the nodes from a simulated client: one exchange per fresh connection,
//! a wait until nodes are healthy, and a [`Recorder`] that keeps every exchange.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use turmoil::net::TcpStream;

use super::BoxError;
use super::group::GROUP;
use super::node::{HTTP_PORT, advertise, host_name};
use super::world::{now, retry};

/// One HTTP/1.1 exchange with `host`, on a fresh simulated connection.
pub async fn call(
    host: &str,
    method: Method,
    path: &str,
    body: impl Into<Bytes>,
) -> Result<(StatusCode, Bytes), BoxError> {
    let stream = TcpStream::connect((host, HTTP_PORT)).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let exchange = async move {
        // Reads accept the codings a browser decodes: values nodes keep in gzip or zstd
        // come back compressed as they are kept (decoded here before anything checks
        // them).
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, host)
            .header(hyper::header::ACCEPT_ENCODING, "gzip, zstd")
            .body(Full::new(body.into()))?;
        let resp = send.send_request(req).await?;
        let status = resp.status();
        let coding = resp.headers().get(hyper::header::CONTENT_ENCODING).cloned();
        let body = resp.into_body().collect().await?.to_bytes();
        // A coding the client did not offer, or a frame that does not decode, is the
        // node's defect, not a network fault: it fails the run.
        let body = match coding.as_ref().map(|c| c.to_str()) {
            None => body,
            Some(Ok(coding @ ("gzip" | "zstd"))) => {
                let codec: peercache::codec::Codec = coding.parse().expect("a codec name");
                let raw = codec.decode(&body, 64 << 20);
                Bytes::from(raw.unwrap_or_else(|e| panic!("{host} {path}: {coding} body: {e}")))
            }
            Some(other) => panic!("{host} {path}: Content-Encoding {other:?} not offered"),
        };
        Result::<_, BoxError>::Ok((status, body))
    };
    // The connection is driven here, not spawned: a timed-out call leaves nothing behind.
    tokio::pin!(exchange, conn);
    tokio::select! {
        r = &mut exchange => r,
        c = &mut conn => match c {
            Err(e) => Err(e.into()),
            Ok(()) => exchange.await,
        },
    }
}

/// The path of `key` in the group.
pub fn key_path(key: &str) -> String {
    format!("/v1/groups/{GROUP}/keys/{key}")
}

/// Waits until nodes `0..n` answer `/healthz` (at most 50 tries each, 100 ms apart).
pub async fn wait_healthy(n: usize) {
    for host in (0..n).map(host_name) {
        let healthy = || async {
            let answer = call(&host, Method::GET, "/healthz", "").await;
            matches!(answer, Ok((StatusCode::OK, _))).then_some(())
        };
        retry(50, Duration::from_millis(100), healthy)
            .await
            .unwrap_or_else(|| panic!("{host} not healthy after 50 attempts"));
    }
}

/// One exchange as the client saw it, in simulated ms.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    pub start: u128,
    pub end: u128,
    /// Method, host and path.
    pub request: String,
    pub status: u16,
    pub body: String,
}

/// Calls nodes by index and keeps every exchange.
#[derive(Clone, Default)]
pub struct Recorder {
    exchanges: Arc<Mutex<Vec<Exchange>>>,
}

impl Recorder {
    /// One exchange with node `i`; returns the status and the body as text.
    pub async fn call(
        &self,
        i: usize,
        method: Method,
        path: &str,
        body: &str,
    ) -> Result<(StatusCode, String), BoxError> {
        let host = host_name(i);
        let start = now().as_millis();
        let request = format!("{method} {host}{path}");
        let (status, got) = call(&host, method, path, body.to_owned()).await?;
        let text = String::from_utf8_lossy(&got).into_owned();
        self.exchanges.lock().unwrap().push(Exchange {
            start,
            end: now().as_millis(),
            request,
            status: status.as_u16(),
            body: text.clone(),
        });
        Ok((status, text))
    }

    /// Gets `key` through node `i`.
    pub async fn get(&self, i: usize, key: &str) -> Result<(StatusCode, String), BoxError> {
        self.call(i, Method::GET, &key_path(key), "").await
    }

    /// Node `i`'s statistics of the group.
    pub async fn stats(&self, i: usize) -> Result<Value, BoxError> {
        let (status, body) = self.call(i, Method::GET, "/v1/stats", "").await?;
        assert_eq!(status, StatusCode::OK, "stats of {}", host_name(i));
        let json: Value = serde_json::from_str(&body)?;
        assert_eq!(json["node"].as_str(), Some(advertise(i).as_str()));
        Ok(json["groups"][GROUP].clone())
    }

    /// Every exchange so far.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.exchanges.lock().unwrap().clone()
    }
}

/// A counter of a group's statistics.
pub fn counter(stats: &Value, name: &str) -> u64 {
    stats[name].as_u64().expect(name)
}
