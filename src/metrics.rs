//! Prometheus metrics of a node (prometheus-client): request and peer-RPC latency
//! histograms, HTTP connections and refusals, and the groups' counters, cache sizes and
//! hot keys read at scrape time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::auth::Refusal;
use crate::group::{GroupStats, Registry};
use crate::peer::{CallObserver, Outcome};
use crate::tls::Tls;

/// Latency buckets from 50 µs to about 26 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    rpc: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    op: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

/// The reasons of [`Metrics::auth_refusals`].
const REFUSAL_REASONS: [&str; 2] = ["unauthorized", "forbidden"];

/// A node's metrics.
pub struct Metrics {
    registry: prometheus_client::registry::Registry,
    peer_rpcs: Family<RpcLabels, Histogram>,
    peer_batches: Histogram,
    peer_decompress: Counter<f64, AtomicU64>,
    peer_streams: Counter,
    requests: Family<RequestLabels, Histogram>,
    http_connections: Gauge,
    http_refused: Counter,
    auth_refusals: Family<RefusalLabels, Counter>,
    /// The TLS of each port that has it, for `/v1/stats`.
    tls: Vec<(&'static str, Arc<Tls>)>,
}

impl Metrics {
    /// Metrics of a node serving the groups of `groups`.
    pub fn new(groups: Registry) -> Self {
        let mut registry = prometheus_client::registry::Registry::with_prefix("peercache");
        let peer_rpcs = Family::<RpcLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let requests = Family::<RequestLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "peer_rpc_seconds",
            "Latency of calls to peers, by RPC and outcome (ok, error: the peer answered with an error, unreachable)",
            peer_rpcs.clone(),
        );
        let peer_batches = Histogram::new(exponential_buckets(2.0, 2.0, 8));
        registry.register(
            "peer_batch_keys",
            "Keys per GetMany call: gets to one peer ready at the same moment, sent together",
            peer_batches.clone(),
        );
        let peer_decompress = Counter::<f64, AtomicU64>::default();
        registry.register(
            "peer_decompress_seconds",
            "Time spent decompressing the values peers answered compressed (every frame is checked before it is kept or passed on)",
            peer_decompress.clone(),
        );
        let peer_streams = Counter::default();
        registry.register(
            "peer_streams_opened",
            "Streams of gets opened to peers (GetStream, one per peer connection); a rising count means streams keep breaking",
            peer_streams.clone(),
        );
        registry.register(
            "http_request_seconds",
            "Latency of HTTP API requests, by operation and status",
            requests.clone(),
        );
        let http_connections = Gauge::default();
        registry.register(
            "http_connections",
            "HTTP client connections open",
            http_connections.clone(),
        );
        let http_refused = Counter::default();
        registry.register(
            "http_connections_refused",
            "HTTP client connections closed at once because the connection limit was reached",
            http_refused.clone(),
        );
        let auth_refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "http_auth_refusals",
            "HTTP API requests refused before their handler: unauthorized (no or an unknown bearer token, 401), forbidden (the token's role does not permit it, 403)",
            auth_refusals.clone(),
        );
        for reason in REFUSAL_REASONS {
            let _ = auth_refusals.get_or_create(&RefusalLabels { reason });
        }
        registry.register_collector(Box::new(GroupCollector(groups)));
        Metrics {
            registry,
            peer_rpcs,
            peer_decompress,
            peer_streams,
            peer_batches,
            requests,
            http_connections,
            http_refused,
            auth_refusals,
            tls: Vec::new(),
        }
    }

    /// Also reports the handshake counts of the TLS of `port` ("grpc" or "http").
    pub fn with_tls(mut self, port: &'static str, tls: Arc<Tls>) -> Self {
        self.tls.push((port, tls.clone()));
        self.registry
            .register_collector(Box::new(TlsCollector { port, tls }));
        self
    }

    /// The handshake counts of each port with TLS, by port: refused (`accept`,
    /// `connect`) and `reloads`.
    pub fn tls_counts(&self) -> BTreeMap<&'static str, BTreeMap<&'static str, u64>> {
        (self.tls.iter())
            .map(|(port, tls)| {
                let c = tls.counters();
                let counts = [
                    ("refused_accept", c.refused_incoming()),
                    ("refused_connect", c.refused_outgoing()),
                    ("reloads", c.reloads()),
                ];
                (*port, counts.into_iter().collect())
            })
            .collect()
    }

    /// Records one HTTP API request.
    pub fn observe_request(&self, op: &'static str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels { op, status })
            .observe(took.as_secs_f64());
    }

    /// An HTTP client connection was accepted.
    pub fn http_connection_opened(&self) {
        self.http_connections.inc();
    }

    /// An accepted HTTP client connection closed.
    pub fn http_connection_closed(&self) {
        self.http_connections.dec();
    }

    /// An HTTP client connection was closed at once, over the connection limit.
    pub fn http_connection_refused(&self) {
        self.http_refused.inc();
    }

    /// A request was refused for its credentials.
    pub fn auth_refused(&self, refusal: Refusal) {
        let reason = match refusal.is_unauthorized() {
            true => "unauthorized",
            false => "forbidden",
        };
        self.auth_refusals
            .get_or_create(&RefusalLabels { reason })
            .inc();
    }

    /// Requests refused for their credentials so far, by reason (`unauthorized`,
    /// `forbidden`).
    pub fn auth_refusals(&self) -> BTreeMap<&'static str, u64> {
        REFUSAL_REASONS
            .into_iter()
            .map(|reason| {
                let n = self
                    .auth_refusals
                    .get_or_create(&RefusalLabels { reason })
                    .get();
                (reason, n)
            })
            .collect()
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Peer clients report their calls here.
impl CallObserver for Metrics {
    fn observe(&self, rpc: &'static str, outcome: Outcome, took: Duration) {
        let outcome = outcome.as_str();
        self.peer_rpcs
            .get_or_create(&RpcLabels { rpc, outcome })
            .observe(took.as_secs_f64());
    }

    fn observe_batch(&self, keys: usize) {
        self.peer_batches.observe(keys as f64);
    }

    fn observe_decode(&self, took: Duration) {
        self.peer_decompress.inc_by(took.as_secs_f64());
    }

    fn observe_stream_opened(&self) {
        self.peer_streams.inc();
    }
}

/// The most hot keys of one group in `/metrics`, hottest first: keys are client-chosen,
/// so the label set must stay bounded whatever the detector's `top`.
const HOT_KEYS_SHOWN: usize = 16;

/// Reads every group's stats and hot keys at scrape time.
#[derive(Debug)]
struct GroupCollector(Registry);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabel {
    group: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HotKeyLabels {
    group: String,
    key: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    group: String,
    cache: &'static str,
}

impl Collector for GroupCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let groups = self.0.groups();
        let stats: Vec<(String, GroupStats)> = (groups.iter())
            .map(|g| (g.name().to_owned(), g.stats()))
            .collect();
        for c in GroupStats::COUNTERS {
            let help = c.help.trim();
            let mut metric = encoder.encode_descriptor(c.name, help, None, MetricType::Counter)?;
            for (group, s) in &stats {
                let labels = GroupLabel {
                    group: group.clone(),
                };
                ConstCounter::new((c.read)(s)).encode(metric.encode_family(&labels)?)?;
            }
        }
        for f in GroupStats::STORE_FIELDS {
            let kind = if f.counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let name = format!("cache_{}", f.name);
            let mut metric = encoder.encode_descriptor(&name, f.help, None, kind)?;
            for (group, s) in &stats {
                for (cache, st) in [("main", &s.store), ("hot", &s.hot)] {
                    let labels = CacheLabels {
                        group: group.clone(),
                        cache,
                    };
                    let v = (f.read)(st);
                    let family = metric.encode_family(&labels)?;
                    if f.counter {
                        ConstCounter::new(v).encode(family)?;
                    } else {
                        ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(family)?;
                    }
                }
            }
        }
        let mut hot = encoder.encode_descriptor(
            "hot_key_qps",
            &format!("Keys hot at this node (their owner) now, by group and key: the estimated gets per second its peers sent for the key in the last detection window that found it hot; at most the {HOT_KEYS_SHOWN} hottest per group"),
            None,
            MetricType::Gauge,
        )?;
        for g in &groups {
            for k in g.hot_keys().into_iter().take(HOT_KEYS_SHOWN) {
                let labels = HotKeyLabels {
                    group: g.name().to_owned(),
                    key: k.key,
                };
                // The library escapes label values (`\`, `"`, newlines).
                ConstGauge::new(k.rate).encode(hot.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Reads a port's TLS handshake counts at scrape time.
#[derive(Debug)]
struct TlsCollector {
    port: &'static str,
    tls: Arc<Tls>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TlsLabels {
    port: &'static str,
    side: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabel {
    port: &'static str,
}

impl Collector for TlsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let counts = self.tls.counters();
        let mut refused = encoder.encode_descriptor(
            "tls_handshakes_refused",
            "TLS handshakes that failed, by port and side: accept (a client or peer without a valid certificate, or not speaking TLS) and connect (a peer whose certificate is not the member's it was dialled as)",
            None,
            MetricType::Counter,
        )?;
        for (side, n) in [
            ("accept", counts.refused_incoming()),
            ("connect", counts.refused_outgoing()),
        ] {
            let labels = TlsLabels {
                port: self.port,
                side,
            };
            ConstCounter::new(n).encode(refused.encode_family(&labels)?)?;
        }
        let mut reloads = encoder.encode_descriptor(
            "tls_reloads",
            "Successful reloads of the TLS certificate, key and CA (SIGHUP)",
            None,
            MetricType::Counter,
        )?;
        let labels = PortLabel { port: self.port };
        ConstCounter::new(counts.reloads()).encode(reloads.encode_family(&labels)?)?;
        Ok(())
    }
}
