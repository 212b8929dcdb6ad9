//! Latency histograms (HdrHistogram, microseconds), error counts, and their summaries.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency a histogram records exactly, in µs; longer ones are clamped to it.
const MAX_US: u64 = 120_000_000;

/// A new latency histogram: 1 µs to 120 s at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

/// What one worker (or one second of a run) saw: latencies of successful requests and
/// failures by kind.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// Latencies of successful requests, µs.
    pub latency: Histogram<u64>,
    /// Failed requests by kind (`timeout`, `connect`, `http 503`, ...).
    pub errors: BTreeMap<String, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            latency: histogram(),
            errors: BTreeMap::new(),
        }
    }
}

impl Recorder {
    /// Records one success.
    pub fn ok(&mut self, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_US);
        self.latency.record(us).expect("clamped into the bounds");
    }

    /// Records one failure.
    pub fn error(&mut self, kind: &str) {
        match self.errors.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                self.errors.insert(kind.to_owned(), 1);
            }
        }
    }

    /// Adds everything `other` recorded.
    pub fn merge(&mut self, other: &Recorder) {
        self.latency
            .add(&other.latency)
            .expect("histograms with the same bounds");
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
    }

    /// Successful requests.
    pub fn oks(&self) -> u64 {
        self.latency.len()
    }

    /// Failed requests.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The summary over `elapsed`.
    pub fn summary(&self, elapsed: Duration) -> Summary {
        let h = &self.latency;
        let ms = |us: u64| us as f64 / 1000.0;
        let at = |q: f64| {
            if h.is_empty() {
                0.0
            } else {
                ms(h.value_at_quantile(q))
            }
        };
        let secs = elapsed.as_secs_f64().max(1e-9);
        Summary {
            requests: self.oks() + self.error_count(),
            ok: self.oks(),
            errors: self.error_count(),
            errors_by_kind: self.errors.clone(),
            seconds: elapsed.as_secs_f64(),
            qps: self.oks() as f64 / secs,
            latency_ms: Latency {
                mean: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
                p50: at(0.50),
                p90: at(0.90),
                p99: at(0.99),
                p999: at(0.999),
                max: if h.is_empty() { 0.0 } else { ms(h.max()) },
            },
            percentiles: percentiles(h),
        }
    }
}

/// Latency percentiles of successful requests, milliseconds.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Latency {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
}

/// One point of the percentile curve.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Percentile {
    /// Percentile, 0 to 100.
    pub percentile: f64,
    /// Latency at it, milliseconds.
    pub ms: f64,
    /// Requests at or below it.
    pub count: u64,
}

/// Counts and latencies of a run (or a part of one).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Summary {
    /// Requests that finished (ok + errors).
    pub requests: u64,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// Failed requests by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Length of the measured part, seconds.
    pub seconds: f64,
    /// Successful requests per second.
    pub qps: f64,
    /// Latency of successful requests.
    pub latency_ms: Latency,
    /// The full percentile curve (HdrHistogram's percentile iteration, 5 ticks per half).
    pub percentiles: Vec<Percentile>,
}

/// The histogram's percentile curve, as HdrHistogram prints it.
fn percentiles(h: &Histogram<u64>) -> Vec<Percentile> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut curve: Vec<Percentile> = h
        .iter_quantiles(5)
        .map(|v| Percentile {
            percentile: v.quantile_iterated_to() * 100.0,
            ms: h.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0,
            count: v.count_since_last_iteration(),
        })
        .collect();
    // The iteration ends with the 100th percentile repeated; keep it once.
    curve.dedup_by(|b, a| a.percentile >= 100.0 && b.percentile >= 100.0);
    curve
}

/// Formats milliseconds for a table: µs below 1 ms, s above 1 s.
pub fn fmt_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0}µs", ms * 1000.0)
    } else if ms < 1000.0 {
        format!("{ms:.2}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder(latencies_us: impl IntoIterator<Item = u64>) -> Recorder {
        let mut r = Recorder::default();
        for us in latencies_us {
            r.ok(Duration::from_micros(us));
        }
        r
    }

    #[test]
    fn merged_histograms_equal_one_histogram_of_everything() {
        let a: Vec<u64> = (1..=5000).map(|i| i * 3).collect();
        let b: Vec<u64> = (1..=2000).map(|i| 20_000 + i * 50).collect();
        let mut merged = recorder(a.clone());
        merged.error("timeout");
        let mut other = recorder(b.clone());
        other.error("timeout");
        other.error("connect");
        merged.merge(&other);
        let whole = recorder(a.iter().chain(&b).copied());

        assert_eq!(merged.latency, whole.latency);
        assert_eq!(merged.oks(), 7000);
        assert_eq!(
            merged.errors,
            BTreeMap::from([("connect".into(), 1), ("timeout".into(), 2)])
        );
        let s = merged.summary(Duration::from_secs(2));
        assert_eq!(s.requests, 7003);
        assert_eq!(s.qps, 3500.0);
        // 5,000 of 7,000 samples are at most 15 ms, so the median is in the first set
        // and the 99th percentile in the second.
        assert!(
            s.latency_ms.p50 <= 15.0 && s.latency_ms.p99 > 20.0,
            "{:?}",
            s.latency_ms
        );
        assert!(
            (s.latency_ms.max - 120.0).abs() < 0.1,
            "{}",
            s.latency_ms.max
        );
    }

    #[test]
    fn percentiles_are_within_the_histogram_precision() {
        let s = recorder(1..=100_000).summary(Duration::from_secs(1));
        for (got, want) in [
            (s.latency_ms.p50, 50.0),
            (s.latency_ms.p90, 90.0),
            (s.latency_ms.p99, 99.0),
            (s.latency_ms.p999, 99.9),
        ] {
            assert!((got - want).abs() / want < 0.001, "{got} vs {want}");
        }
        let curve = &s.percentiles;
        assert!(curve.windows(2).all(|w| w[0].percentile < w[1].percentile));
        assert!(curve.windows(2).all(|w| w[0].ms <= w[1].ms));
        assert_eq!(curve.last().unwrap().percentile, 100.0);
        assert_eq!(curve.iter().map(|p| p.count).sum::<u64>(), 100_000);
    }

    #[test]
    fn latencies_beyond_the_range_are_clamped_not_lost() {
        let mut r = Recorder::default();
        r.ok(Duration::from_secs(3600));
        r.ok(Duration::ZERO);
        assert_eq!(r.oks(), 2);
        assert!(r.summary(Duration::from_secs(1)).latency_ms.max >= 119_000.0);
    }

    #[test]
    fn an_empty_recorder_summarises_to_zeros() {
        let s = Recorder::default().summary(Duration::from_secs(1));
        assert_eq!((s.requests, s.qps, s.latency_ms.p99), (0, 0.0, 0.0));
        assert!(s.percentiles.is_empty());
        assert_eq!(fmt_ms(0.25), "250µs");
        assert_eq!(fmt_ms(12.345), "12.35ms");
        assert_eq!(fmt_ms(1500.0), "1.50s");
    }
}
