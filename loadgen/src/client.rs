//! Talking to the nodes: HTTP (the client API), RESP (resp.rs) or gRPC (the peer
//! protocol, sent to each key's owner), and choosing which node gets a request.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use peercache::proto::{self, peer_client::PeerClient};
use peercache::{Member, Ring};
use rand::Rng;
use serde_json::Value;
use tonic::transport::{Channel, Endpoint};

use crate::keys::Op;

/// How requests reach the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// The HTTP API (`/v1/groups/{group}/keys/{key}`).
    Http,
    /// The peers' gRPC protocol, each request sent to its key's owner.
    Grpc,
    /// The Redis protocol (GET/SET/DEL) to the targets' `redis://HOST:PORT` in turn.
    Resp,
}

/// Which node a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// The targets in turn.
    Any,
    /// The key's owner (as the first target's `/v1/ring` says).
    Owner,
    /// A target that does not own the key, so every miss in its own caches is a peer hop.
    Remote,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Route::Any => "any",
            Route::Owner => "owner",
            Route::Remote => "remote",
        })
    }
}

/// A CA the HTTP clients trust besides the built-in roots: the one that signed the
/// nodes' HTTPS certificates. Set once, before any client is built.
static TRUSTED_CA: OnceLock<reqwest::Certificate> = OnceLock::new();

/// Makes the HTTP clients built from now on trust the CA certificate `pem`. One CA per
/// process: calls after the first change nothing.
pub fn trust_ca(pem: &[u8]) -> anyhow::Result<()> {
    let ca = reqwest::Certificate::from_pem(pem).context("the CA certificate")?;
    let _ = TRUSTED_CA.set(ca);
    Ok(())
}

/// A `reqwest` client builder trusting [`trust_ca`]'s CA, if one was given.
pub fn http_builder() -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    match TRUSTED_CA.get() {
        Some(ca) => builder.add_root_certificate(ca.clone()),
        None => builder,
    }
}

/// A short GET for control calls (stats, ring, health).
pub async fn get_json(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let resp = http
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let text = resp.text().await.with_context(|| format!("GET {url}"))?;
    if !status.is_success() {
        bail!("GET {url}: {status}: {}", text.trim());
    }
    serde_json::from_str(&text).with_context(|| format!("GET {url}: not JSON"))
}

/// The ring a node sees, and its own id.
pub struct RingView {
    /// The node's id.
    pub node: String,
    /// The ring built from its members, as the node builds it.
    pub ring: Ring,
}

impl RingView {
    /// Reads `GET /v1/ring` from the node at `base`.
    pub async fn fetch(http: &reqwest::Client, base: &str) -> anyhow::Result<RingView> {
        let v = get_json(http, &format!("{base}/v1/ring")).await?;
        let members = v["members"]
            .as_array()
            .context("/v1/ring has no members")?
            .iter()
            .map(|m| {
                let id = m["id"].as_str().unwrap_or_default();
                let addr = m["address"].as_str().unwrap_or_default();
                let weight = m["weight"].as_u64().unwrap_or(1) as u32;
                Member::new(id, addr).with_weight(weight)
            });
        let vnodes = v["vnodes_per_weight"].as_u64().unwrap_or(512) as u32;
        Ok(RingView {
            node: v["node"].as_str().unwrap_or_default().to_owned(),
            ring: Ring::new(members, vnodes),
        })
    }
}

/// The nodes a run sends to, and where each key goes.
pub struct Targets {
    /// Base URLs, `http://host:port`.
    pub urls: Vec<String>,
    ring: Option<Ring>,
    /// Ring member id → index in `urls`.
    index_of: BTreeMap<String, usize>,
    /// gRPC address of each target (from the ring), for the gRPC protocol.
    grpc_addr: Vec<Option<String>>,
    /// A key sent round robin whatever the route (see [`Targets::spreading`]).
    spread: Option<String>,
}

impl Targets {
    /// Targets with no ring: only [`Route::Any`] works.
    pub fn plain(urls: Vec<String>) -> Targets {
        let n = urls.len();
        Targets {
            urls,
            ring: None,
            index_of: BTreeMap::new(),
            grpc_addr: vec![None; n],
            spread: None,
        }
    }

    /// Targets whose ids and ring are read from their `/v1/ring`.
    pub async fn discover(http: &reqwest::Client, urls: Vec<String>) -> anyhow::Result<Targets> {
        let mut t = Targets::plain(urls);
        for (i, url) in t.urls.iter().enumerate() {
            let view = RingView::fetch(http, url).await?;
            if t.ring.is_none() {
                t.ring = Some(view.ring.clone());
            }
            t.index_of.insert(view.node, i);
        }
        let ring = t.ring.as_ref().expect("at least one target");
        for m in ring.members() {
            if let Some(&i) = t.index_of.get(&m.id) {
                t.grpc_addr[i] = Some(m.addr.clone());
            }
        }
        Ok(t)
    }

    /// Sends `key` round robin whatever the route: a hot key read through every node
    /// while the other keys go to their owners.
    pub fn spreading(mut self, key: String) -> Targets {
        self.spread = Some(key);
        self
    }

    /// The target index for a request for `key`; `turn` advances the round robin.
    pub fn pick(&self, route: Route, key: &str, turn: usize, rng: &mut impl Rng) -> usize {
        let n = self.urls.len();
        if self.spread.as_deref() == Some(key) {
            return turn % n;
        }
        let owner = || {
            let ring = self.ring.as_ref()?;
            self.index_of.get(&ring.owner(key)?.id).copied()
        };
        match route {
            Route::Any => turn % n,
            // A key owned by a node that is not a target goes round robin.
            Route::Owner => owner().unwrap_or(turn % n),
            Route::Remote => match owner() {
                Some(o) if n > 1 => (o + 1 + rng.random_range(0..n - 1)) % n,
                _ => turn % n,
            },
        }
    }
}

/// One request's failure, by kind.
pub type Failure = String;

/// A client of all targets over one protocol.
#[derive(Clone)]
pub enum Client {
    /// HTTP API over plain HTTP: connections loadgen holds itself.
    Plain(Arc<crate::http1::Http1>),
    /// HTTP API over https.
    Http {
        /// Pooled keep-alive connections; reconnects by itself.
        http: reqwest::Client,
        /// `{base}/v1/groups/{group}/keys/` per target.
        prefixes: Vec<String>,
    },
    /// gRPC to owners.
    Grpc {
        /// One channel per target (reconnects by itself).
        rpcs: Vec<PeerClient<Channel>>,
        /// The group.
        group: String,
        /// Deadline sent with each call.
        timeout: Duration,
    },
    /// Redis protocol.
    Resp(crate::resp::RespClient),
}

impl Client {
    /// A client of `targets` for `group`; each request ends after `timeout`.
    pub fn new(
        protocol: Protocol,
        targets: &Targets,
        group: &str,
        timeout: Duration,
        pool: usize,
    ) -> anyhow::Result<Client> {
        Ok(match protocol {
            Protocol::Http if targets.urls.iter().all(|u| u.starts_with("http://")) => {
                Client::Plain(Arc::new(crate::http1::Http1::new(
                    &targets.urls,
                    group,
                    timeout,
                )?))
            }
            Protocol::Http => Client::Http {
                http: http_builder()
                    .timeout(timeout)
                    .connect_timeout(timeout.min(Duration::from_secs(2)))
                    .pool_max_idle_per_host(pool)
                    .tcp_nodelay(true)
                    .build()?,
                prefixes: targets
                    .urls
                    .iter()
                    .map(|u| format!("{u}/v1/groups/{group}/keys/"))
                    .collect(),
            },
            Protocol::Resp => {
                let addrs: Vec<String> = (targets.urls.iter())
                    .map(|u| u.trim_start_matches("redis://").to_owned())
                    .collect();
                Client::resp(&addrs, group, timeout)
            }
            Protocol::Grpc => {
                let mut rpcs = Vec::new();
                for (url, addr) in targets.urls.iter().zip(&targets.grpc_addr) {
                    let addr = addr
                        .as_ref()
                        .with_context(|| format!("{url} is not in the ring it reports"))?;
                    let channel = Endpoint::from_shared(format!("http://{addr}"))?
                        .timeout(timeout)
                        .connect_timeout(timeout.min(Duration::from_secs(2)))
                        .tcp_nodelay(true)
                        .connect_lazy();
                    rpcs.push(PeerClient::new(channel).max_decoding_message_size(64 << 20));
                }
                Client::Grpc {
                    rpcs,
                    group: group.to_owned(),
                    timeout,
                }
            }
        })
    }

    /// A Redis-protocol client of `addrs`, target by target as in `targets`.
    pub fn resp(addrs: &[String], group: &str, timeout: Duration) -> Client {
        Client::Resp(crate::resp::RespClient::new(addrs, group, timeout))
    }

    /// Sends `op` on `key` to target `to`. `Err` is the failure's kind.
    pub async fn call(&self, to: usize, op: Op, key: &str, value: &Bytes) -> Result<(), Failure> {
        match self {
            Client::Plain(http) => http.call(to, op, key, value).await,
            Client::Http { http, prefixes } => {
                let url = format!("{}{key}", prefixes[to]);
                let req = match op {
                    Op::Get => http.get(url),
                    Op::Set => http.put(url).body(value.clone()),
                    Op::Remove => http.delete(url),
                };
                let resp = req.send().await.map_err(|e| http_failure(&e))?;
                let status = resp.status();
                // Read the whole body: a request is done when its value has arrived.
                resp.bytes().await.map_err(|e| http_failure(&e))?;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("http {}", status.as_u16()))
                }
            }
            Client::Grpc {
                rpcs,
                group,
                timeout,
            } => {
                let mut rpc = rpcs[to].clone();
                let deadline_ms = timeout.as_millis() as u64;
                let (group, key) = (group.clone(), key.to_owned());
                let result = match op {
                    Op::Get => rpc
                        .get(proto::GetRequest {
                            group,
                            key,
                            deadline_ms,
                            relay: false,
                            accept: Vec::new(),
                            max_reply_bytes: 0,
                        })
                        .await
                        .map(drop),
                    Op::Set => rpc
                        .set(proto::SetRequest {
                            group,
                            key,
                            value: value.clone(),
                            ttl_ms: 0,
                            codec: proto::Codec::Identity as i32,
                            deadline_ms,
                        })
                        .await
                        .map(drop),
                    Op::Remove => rpc
                        .remove(proto::RemoveRequest {
                            group,
                            key,
                            deadline_ms,
                        })
                        .await
                        .map(drop),
                };
                result.map_err(|s| format!("grpc {:?}", s.code()).to_lowercase())
            }
            Client::Resp(resp) => {
                let key = key.as_bytes();
                let reply = match op {
                    Op::Get => resp.call(to, &[b"GET", key]).await?,
                    Op::Set => resp.call(to, &[b"SET", key, value]).await?,
                    Op::Remove => resp.call(to, &[b"DEL", key]).await?,
                };
                // A key the source lacks: as HTTP's 404, a failed request.
                match reply {
                    peercache::resp::Frame::Null => Err("resp nil".into()),
                    _ => Ok(()),
                }
            }
        }
    }
}

/// The kind of a failed HTTP request: `timeout`, `connect` or `io`.
pub fn http_failure(e: &reqwest::Error) -> Failure {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "io".into()
    }
}
