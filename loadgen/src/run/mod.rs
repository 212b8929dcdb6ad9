//! The load loop: closed (fixed concurrency) or open (fixed rate, latency from the
//! intended send time), a warm-up, per-second progress and a per-second timeline.
//!
//! [`worker`] is one worker's loop and the counters the workers share; [`progress`] is
//! what a run prints.

mod progress;
mod worker;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

pub use self::progress::table;
use self::worker::{Live, Phases, Shared, Worker};
use crate::client::{Client, Failure, Route, Targets};
use crate::keys::{Mix, Op, Workload};
use crate::stats::{Recorder, Summary};

/// How hard to push.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Load {
    /// `concurrency` workers, each sending its next request when the last one is done.
    Closed {
        /// Requests in flight.
        concurrency: usize,
    },
    /// `rate` requests per second on a fixed schedule, spread over `connections`
    /// workers; a late request is timed from when it should have been sent.
    Open {
        /// Requests per second.
        rate: f64,
        /// Workers (connections).
        connections: usize,
    },
}

impl Load {
    /// Workers, each with one request in flight at most.
    pub fn workers(&self) -> usize {
        match *self {
            Load::Closed { concurrency } => concurrency,
            Load::Open { connections, .. } => connections,
        }
    }
}

/// One run.
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    /// Name in progress lines.
    pub label: String,
    /// Group the keys are in.
    pub group: String,
    /// Size of the key space (ids `0..keys`).
    pub keys: u64,
    /// Key distribution.
    #[serde(serialize_with = "as_text")]
    pub workload: Workload,
    /// Operation mix.
    #[serde(serialize_with = "as_text")]
    pub mix: Mix,
    /// Bytes per written value.
    pub value_size: usize,
    /// Which node gets each request.
    pub route: Route,
    /// Closed or open loop.
    pub load: Load,
    /// Measured time.
    #[serde(serialize_with = "as_secs")]
    pub duration: Duration,
    /// Unmeasured time before it.
    #[serde(serialize_with = "as_secs")]
    pub warmup: Duration,
    /// Seed of the key and operation choices.
    pub seed: u64,
    /// Print a line per second to stderr.
    #[serde(skip)]
    pub progress: bool,
}

fn as_text<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// One second of a run, by intended send time.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Second {
    /// Seconds since the measured part began.
    pub t: u64,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// What was run.
    pub config: RunConfig,
    /// The measured part.
    pub summary: Summary,
    /// Requests sent, warm-up included.
    pub sent: u64,
    /// Per second of the measured part.
    pub timeline: Vec<Second>,
}

/// Runs `cfg` against `targets` through `client`; writes carry `cfg.value_size` bytes.
pub async fn run_client(cfg: &RunConfig, targets: Arc<Targets>, client: Arc<Client>) -> RunReport {
    let value = Bytes::from(vec![b'w'; cfg.value_size]);
    let call = move |to: usize, op: Op, key: String| {
        let (client, value) = (client.clone(), value.clone());
        async move { client.call(to, op, &key, &value).await }
    };
    run(cfg, targets, call).await
}

/// Runs `cfg` against `targets`; `call(target, op, key)` sends one request.
pub async fn run<F, Fut>(cfg: &RunConfig, targets: Arc<Targets>, call: F) -> RunReport
where
    F: Fn(usize, Op, String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Failure>> + Send + 'static,
{
    let live = Arc::new(Live::default());
    let phases = Phases::from_now(cfg.warmup, cfg.duration);
    let progress = cfg.progress.then(|| {
        let (live, label) = (live.clone(), cfg.label.clone());
        tokio::spawn(progress::print(live, label, phases))
    });
    let shared = Shared {
        live: live.clone(),
        targets,
        call,
        phases,
        scan: Arc::new(AtomicU64::new(0)),
    };
    let tasks: Vec<_> = (0..cfg.load.workers().max(1))
        .map(|w| tokio::spawn(Worker::new(cfg, w, shared.clone()).run()))
        .collect();
    let mut total = Recorder::default();
    for task in tasks {
        total.merge(&task.await.expect("a load worker panicked"));
    }
    if let Some(p) = progress {
        p.abort();
    }
    RunReport {
        config: cfg.clone(),
        summary: total.summary(cfg.duration),
        sent: live.sent.load(Relaxed),
        timeline: live.seconds(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn config(load: Load, duration: Duration) -> RunConfig {
        RunConfig {
            label: "test".into(),
            group: "g".into(),
            keys: 100,
            workload: Workload::Uniform,
            mix: Mix::GETS,
            value_size: 10,
            route: Route::Any,
            load,
            duration,
            warmup: Duration::ZERO,
            seed: 1,
            progress: false,
        }
    }

    /// A server that answers in 1 ms but stalls for one second once, 2 s into the run:
    /// the open loop must charge the stall to every request scheduled during it.
    #[tokio::test(start_paused = true)]
    async fn open_loop_latency_counts_from_the_intended_send_time() {
        let begin = Instant::now();
        let stall_at = begin + Duration::from_secs(2);
        let stalled = Arc::new(AtomicU64::new(0));
        let call = move |_to, _op, _key| {
            let stalled = stalled.clone();
            async move {
                if Instant::now() >= stall_at && stalled.swap(1, Relaxed) == 0 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok(())
            }
        };
        let load = Load::Open {
            rate: 100.0,
            connections: 1,
        };
        let cfg = config(load, Duration::from_secs(5));
        let r = run(&cfg, Arc::new(Targets::plain(vec!["x".into()])), call).await;
        let s = &r.summary;
        assert_eq!(s.ok, 500, "every scheduled request is sent");
        // The 100 requests due during the stall (a fifth of the run) waited for its end,
        // 1 s down to 0: the worst tenth of the run waited half a second or more. A
        // closed loop would have recorded a single slow request.
        let l = &s.latency_ms;
        assert!(l.p90 > 450.0 && l.p90 < 650.0 && l.p99 > 900.0, "{l:?}");
        assert!(s.latency_ms.max >= 1000.0, "{:?}", s.latency_ms);
        assert!(l.p50 < 2.0, "{l:?}");
        // The timeline puts the slow requests in the second they were due.
        assert_eq!(r.timeline.len(), 5);
        assert!(
            r.timeline[2].p99_ms > 500.0 && r.timeline[1].p99_ms < 2.0,
            "{:?}",
            r.timeline
        );
    }

    /// A handler that takes a constant 300 µs, on the real clock: an open loop at a low
    /// rate must report about what a closed loop with one connection does. Before the
    /// open loop charged the timer's own lateness (tokio sleeps in whole milliseconds,
    /// rounded up), its P50 read about 1 ms more.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_low_rate_open_loop_reports_what_a_closed_loop_does() {
        let call = |_to, _op, _key| async {
            let started = std::time::Instant::now();
            while started.elapsed() < Duration::from_micros(300) {
                tokio::task::yield_now().await;
            }
            Ok(())
        };
        let targets = Arc::new(Targets::plain(vec!["x".into()]));
        let closed = config(Load::Closed { concurrency: 1 }, Duration::from_secs(1));
        let closed = run(&closed, targets.clone(), call).await.summary;
        let load = Load::Open {
            rate: 200.0,
            connections: 1,
        };
        let open = run(&config(load, Duration::from_secs(2)), targets, call).await;
        let (c, o) = (closed.latency_ms.p50, open.summary.latency_ms.p50);
        assert!(c >= 0.3, "closed loop P50 {c} ms");
        assert!(
            o >= 0.3 && o < c + 0.25,
            "open loop P50 {o} ms, closed {c} ms"
        );
        assert_eq!(open.summary.ok, 400, "every scheduled request is sent");
    }

    /// A closed loop keeps exactly `concurrency` requests in flight, leaves the warm-up
    /// out, and counts failures by kind.
    #[tokio::test(start_paused = true)]
    async fn closed_loop_keeps_concurrency_and_records_errors_by_kind() {
        let in_flight = Arc::new(AtomicU64::new(0));
        let most = Arc::new(AtomicU64::new(0));
        let (f, m) = (in_flight.clone(), most.clone());
        let call = move |to: usize, _op, key: String| {
            let (f, m) = (f.clone(), m.clone());
            async move {
                let now = f.fetch_add(1, Relaxed) + 1;
                m.fetch_max(now, Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
                f.fetch_sub(1, Relaxed);
                match (to, key.ends_with('7')) {
                    (_, true) => Err("http 503".to_owned()),
                    (1, _) => Err("timeout".to_owned()),
                    _ => Ok(()),
                }
            }
        };
        let mut cfg = config(Load::Closed { concurrency: 8 }, Duration::from_secs(2));
        cfg.warmup = Duration::from_millis(500);
        let targets = Arc::new(Targets::plain(vec!["a".into(), "b".into()]));
        let r = run(&cfg, targets, call).await;
        assert_eq!(most.load(Relaxed), 8);
        // 8 workers × 100 requests/s × 2 s, none of the warm-up.
        assert_eq!(r.summary.requests, 1600);
        assert_eq!(r.sent, 2000);
        let by_kind = &r.summary.errors_by_kind;
        assert!(
            by_kind["timeout"] > 600 && by_kind["http 503"] > 50,
            "{by_kind:?}"
        );
        assert_eq!(r.summary.errors, by_kind.values().sum::<u64>());
        assert_eq!(
            r.timeline.iter().map(|s| s.ok + s.errors).sum::<u64>(),
            1600
        );
    }
}
