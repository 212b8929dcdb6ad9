//! HTTP servers the cluster runs use: the origin behind the nodes (slow, counting every
//! load per key) and the ceiling (a constant answer, the HTTP stack's floor).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::serve::ListenerExt;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::net::TcpListener;

use crate::http1::Http1;
use crate::keys::Op;

/// The source of truth behind the nodes (`--source http://…/{key}`): answers every key
/// after a fixed latency, with a value of a fixed size, and counts loads per key.
pub struct Origin {
    /// Its base URL.
    pub url: String,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Counts {
    total: AtomicU64,
    per_key: Mutex<BTreeMap<String, u64>>,
}

struct OriginState {
    counts: Arc<Counts>,
    latency: Duration,
    value: Bytes,
}

impl Origin {
    /// Starts an origin on a free loopback port.
    pub async fn start(latency: Duration, value_size: usize) -> anyhow::Result<Origin> {
        let counts = Arc::new(Counts::default());
        let state = Arc::new(OriginState {
            counts: counts.clone(),
            latency,
            value: Bytes::from(vec![b'v'; value_size]),
        });
        let app = Router::new().route("/{key}", get(load)).with_state(state);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the origin")?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Origin { url, counts, task })
    }

    /// The `--source` template for the nodes.
    pub fn template(&self) -> String {
        format!("{}/{{key}}", self.url)
    }

    /// Loads so far.
    pub fn loads(&self) -> u64 {
        self.counts.total.load(Relaxed)
    }

    /// Loads so far of each key loaded.
    pub fn per_key(&self) -> BTreeMap<String, u64> {
        self.counts.per_key.lock().clone()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn load(State(s): State<Arc<OriginState>>, Path(key): Path<String>) -> Bytes {
    s.counts.total.fetch_add(1, Relaxed);
    *s.counts.per_key.lock().entry(key).or_default() += 1;
    tokio::time::sleep(s.latency).await;
    s.value.clone()
}

/// Serves the client API's key route with a constant value and nothing behind it, on
/// the same stack as the nodes (axum on a multi-threaded tokio), until killed.
///
/// With `forward` (`http://host:port`), the keys of group `hop` are first asked of that
/// server, as group `constant`, on kept HTTP/1.1 connections, one per request in flight:
/// each such get is a hop with nothing but the HTTP stack around it, the floor of a
/// node's remote hit on this machine (reports/open-loop.md).
pub async fn serve_ceiling(
    addr: &str,
    value_size: usize,
    forward: Option<String>,
) -> anyhow::Result<()> {
    let app = ceiling(value_size, forward)?;
    // As the nodes' listener: answers go out when written, not held for Nagle.
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    axum::serve(listener, app).await?;
    Ok(())
}

/// The ceiling server's routes (see [`serve_ceiling`]).
fn ceiling(value_size: usize, forward: Option<String>) -> anyhow::Result<Router> {
    let value = Bytes::from(vec![b'v'; value_size]);
    let next = forward
        .map(|url| Http1::new(&[url], "constant", Duration::from_secs(5)))
        .transpose()?
        .map(Arc::new);
    Ok(Router::new().route(
        "/v1/groups/{group}/keys/{key}",
        get(move |Path((group, key)): Path<(String, String)>| {
            let value = value.clone();
            let next = next.clone();
            async move {
                match next {
                    Some(next) if group == "hop" => next
                        .call(0, Op::Get, &key, &Bytes::new())
                        .await
                        .map(|()| value)
                        .map_err(|failure| (StatusCode::BAD_GATEWAY, failure)),
                    _ => Ok(value),
                }
            }
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves `app` on a free loopback port; its base URL.
    async fn serve(app: Router) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    async fn get(url: String) -> (u16, Bytes) {
        let response = reqwest::get(url).await.unwrap();
        (response.status().as_u16(), response.bytes().await.unwrap())
    }

    #[tokio::test]
    async fn a_forwarding_ceiling_answers_hop_keys_through_the_next_server() {
        let constant = serve(ceiling(10, None).unwrap()).await;
        let relay = serve(ceiling(10, Some(constant)).unwrap()).await;
        for key in ["a", "b", "a"] {
            let (status, body) = get(format!("{relay}/v1/groups/hop/keys/{key}")).await;
            assert_eq!((status, &body[..]), (200, &b"vvvvvvvvvv"[..]));
        }

        // With nothing at the next address a hop fails, and other groups still answer.
        let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let nowhere = format!("http://{}", gone.local_addr().unwrap());
        drop(gone);
        let relay = serve(ceiling(10, Some(nowhere)).unwrap()).await;
        let (status, body) = get(format!("{relay}/v1/groups/hop/keys/a")).await;
        assert_eq!((status, &body[..]), (502, &b"connect"[..]));
        let (status, _) = get(format!("{relay}/v1/groups/other/keys/a")).await;
        assert_eq!(status, 200);
    }
}
