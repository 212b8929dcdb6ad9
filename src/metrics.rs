//! Prometheus metrics of a node (prometheus-client): request and peer-RPC latency
//! histograms, and the groups' counters and cache sizes read at scrape time.

use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::group::{GroupStats, Registry};

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

/// A node's metrics.
pub struct Metrics {
    registry: prometheus_client::registry::Registry,
    peer_rpcs: Family<RpcLabels, Histogram>,
    requests: Family<RequestLabels, Histogram>,
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
        registry.register(
            "http_request_seconds",
            "Latency of HTTP API requests, by operation and status",
            requests.clone(),
        );
        registry.register_collector(Box::new(GroupCollector(groups)));
        Metrics {
            registry,
            peer_rpcs,
            requests,
        }
    }

    /// Records one call to a peer.
    pub fn observe_peer_rpc(&self, rpc: &'static str, outcome: &'static str, took: Duration) {
        self.peer_rpcs
            .get_or_create(&RpcLabels { rpc, outcome })
            .observe(took.as_secs_f64());
    }

    /// Records one HTTP API request.
    pub fn observe_request(&self, op: &'static str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels { op, status })
            .observe(took.as_secs_f64());
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

/// Reads every group's stats at scrape time.
#[derive(Debug)]
struct GroupCollector(Registry);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabel {
    group: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    group: String,
    cache: &'static str,
}

type Counter = (&'static str, &'static str, fn(&GroupStats) -> u64);

const COUNTERS: &[Counter] = &[
    ("gets", "Gets from this node's clients", |s| s.gets),
    (
        "hits",
        "Gets answered from this node's main or hot cache",
        |s| s.hits,
    ),
    ("hot_hits", "Gets answered from the hot cache", |s| {
        s.hot_hits
    }),
    ("loads", "Calls of this node's loader", |s| s.loads),
    (
        "loads_deduped",
        "Gets that joined a flight already under way",
        |s| s.loads_deduped,
    ),
    ("local_load_errors", "Loader calls that failed", |s| {
        s.local_load_errors
    }),
    ("peer_loads", "Values fetched from their owner", |s| {
        s.peer_loads
    }),
    (
        "peer_errors",
        "Peer calls that did not reach the peer or timed out",
        |s| s.peer_errors,
    ),
    (
        "served_to_peers",
        "Get requests from peers answered by this node",
        |s| s.served_to_peers,
    ),
    (
        "invalidations_failed",
        "Invalidations this node could not deliver",
        |s| s.invalidations_failed,
    ),
];

impl Collector for GroupCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats: Vec<(String, GroupStats)> = self
            .0
            .groups()
            .iter()
            .map(|g| (g.name().to_owned(), g.stats()))
            .collect();
        for (name, help, read) in COUNTERS {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (group, s) in &stats {
                let labels = GroupLabel {
                    group: group.clone(),
                };
                ConstCounter::new(read(s)).encode(metric.encode_family(&labels)?)?;
            }
        }
        type Size = (&'static str, &'static str, fn(&crate::store::Stats) -> u64);
        let sizes: [Size; 3] = [
            ("cache_bytes", "Bytes held, by cache (main or hot)", |s| {
                s.bytes
            }),
            ("cache_items", "Entries held, by cache (main or hot)", |s| {
                s.items
            }),
            (
                "cache_evictions",
                "Entries evicted for room, by cache",
                |s| s.evictions,
            ),
        ];
        for (name, help, read) in sizes {
            let counter = name == "cache_evictions";
            let kind = if counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
            for (group, s) in &stats {
                for (cache, st) in [("main", &s.store), ("hot", &s.hot)] {
                    let labels = CacheLabels {
                        group: group.clone(),
                        cache,
                    };
                    let v = read(st);
                    let family = metric.encode_family(&labels)?;
                    if counter {
                        ConstCounter::new(v).encode(family)?;
                    } else {
                        ConstGauge::new(v as i64).encode(family)?;
                    }
                }
            }
        }
        Ok(())
    }
}
