//! HTTP servers the cluster runs use: the origin behind the nodes (slow, counting every
//! load per key) and the ceiling (a constant answer, the HTTP stack's floor).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::net::TcpListener;

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
pub async fn serve_ceiling(addr: &str, value_size: usize) -> anyhow::Result<()> {
    let value = Bytes::from(vec![b'v'; value_size]);
    let app = Router::new().route(
        "/v1/groups/{group}/keys/{key}",
        get(move || {
            let value = value.clone();
            async move { value }
        }),
    );
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    axum::serve(listener, app).await?;
    Ok(())
}
