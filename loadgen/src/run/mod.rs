//! The load loop: closed (fixed concurrency) or open (fixed rate, latency from the
//! intended send time), a warm-up, per-second progress and a per-second timeline.
//!
//! [`worker`] is one worker's loop and the counters the workers share; [`pacer`] an open
//! loop's send times; [`progress`] is what a run prints.

mod pacer;
mod progress;
mod worker;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

pub use self::pacer::Arrivals;
use self::pacer::{Pacer, Times};
pub use self::progress::table;
use self::worker::{Live, Phases, Shared, Worker};
use crate::client::{Client, Failure, Route, Targets};
use crate::keys::{Mix, Op, Workload};
use crate::stats::{Latency, Recorder, Summary};

/// How hard to push.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Load {
    /// `concurrency` workers, each sending its next request when the last one is done.
    Closed {
        /// Requests in flight.
        concurrency: usize,
    },
    /// `rate` requests per second, spaced as `arrivals` says, taken by whichever of
    /// `connections` workers is free; a late request is timed from when it should have
    /// been sent.
    Open {
        /// Requests per second.
        rate: f64,
        /// Workers (connections).
        connections: usize,
        /// How the send times are spaced.
        arrivals: Arrivals,
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
    /// Open loop: how late the pacer's timer woke for the measured part's send times
    /// (the load generator's own lateness, left out of the latencies above).
    pub pacer_late_ms: Option<Latency>,
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
        pacer: match cfg.load {
            Load::Open {
                rate,
                arrivals,
                connections,
            } => Some(Pacer::start(
                Times::new(phases.start, phases.end, rate, arrivals, cfg.seed),
                connections,
                phases.measure,
            )),
            Load::Closed { .. } => None,
        },
    };
    let pacer = shared.pacer.clone();
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
        pacer_late_ms: pacer.map(|p| p.lateness().summary(cfg.duration).latency_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    /// The tests that time an open loop on the real clock run one at a time: on a
    /// 2-core machine, two at once would time each other.
    static REAL_CLOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

    /// A server that answers in 1 ms but stalls for half a second once, 1 s into the
    /// run: the open loop must charge the stall to every request scheduled during it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_latency_counts_from_the_intended_send_time() {
        let _alone = REAL_CLOCK.lock().await;
        let begin = Instant::now();
        let stall_at = begin + Duration::from_secs(1);
        let stalled = Arc::new(AtomicU64::new(0));
        let call = move |_to, _op, _key| {
            let stalled = stalled.clone();
            async move {
                if Instant::now() >= stall_at && stalled.swap(1, Relaxed) == 0 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok(())
            }
        };
        let load = Load::Open {
            rate: 100.0,
            connections: 1,
            arrivals: Arrivals::Uniform,
        };
        let cfg = config(load, Duration::from_millis(2500));
        let r = run(&cfg, Arc::new(Targets::plain(vec!["x".into()])), call).await;
        let s = &r.summary;
        assert_eq!(s.ok, 250, "every scheduled request is sent");
        // The 50 requests due during the stall (a fifth of the run) waited for its end,
        // 500 ms down to 0: the worst tenth of the run waited 250 ms or more. A closed
        // loop would have recorded a single slow request.
        let l = &s.latency_ms;
        assert!(l.p90 > 200.0 && l.p90 < 450.0 && l.p99 > 440.0, "{l:?}");
        assert!(s.latency_ms.max >= 500.0, "{:?}", s.latency_ms);
        assert!(l.p50 < 10.0, "{l:?}");
        // The timeline puts the slow requests in the second they were due.
        assert_eq!(r.timeline.len(), 3);
        assert!(
            r.timeline[1].p99_ms > 400.0 && r.timeline[0].p99_ms < 50.0,
            "{:?}",
            r.timeline
        );
    }

    /// A handler that takes a constant 300 µs, on the real clock: an open loop at a low
    /// rate must report about what a closed loop with one connection does. When the
    /// open loop charged the timer's own lateness (tokio sleeps in whole milliseconds,
    /// rounded up), its P50 read about 1 ms more.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_low_rate_open_loop_reports_what_a_closed_loop_does() {
        let _alone = REAL_CLOCK.lock().await;
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
            arrivals: Arrivals::Uniform,
        };
        let open = run(&config(load, Duration::from_secs(2)), targets, call).await;
        let (c, o) = (closed.latency_ms.p50, open.summary.latency_ms.p50);
        assert!(c >= 0.3, "closed loop P50 {c} ms");
        assert!(
            o >= 0.3 && o < c + 0.4,
            "open loop P50 {o} ms, closed {c} ms"
        );
        assert_eq!(open.summary.ok, 400, "every scheduled request is sent");
    }

    /// An open loop spaces its sends as scheduled: at 4,000 requests/s, one every 250 µs,
    /// not four at once at each of tokio's millisecond timer ticks.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_open_loop_sends_on_its_schedule_not_in_bursts() {
        let _alone = REAL_CLOCK.lock().await;
        let sent = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let s = sent.clone();
        let call = move |_to, _op, _key| {
            s.lock().push(std::time::Instant::now());
            async { Ok(()) }
        };
        let load = Load::Open {
            rate: 4000.0,
            connections: 16,
            arrivals: Arrivals::Uniform,
        };
        run(
            &config(load, Duration::from_secs(1)),
            Arc::new(Targets::plain(vec!["x".into()])),
            call,
        )
        .await;
        let mut sent = sent.lock().clone();
        sent.sort();
        let gaps: Vec<Duration> = sent.windows(2).map(|w| w[1] - w[0]).collect();
        let close = gaps
            .iter()
            .filter(|g| **g < Duration::from_micros(50))
            .count();
        assert!(sent.len() >= 3900, "{} sent", sent.len());
        // Bursts at each millisecond tick put three of every four sends within 50 µs
        // of the one before; on time, only those after a stall of the machine do.
        assert!(
            close * 2 < gaps.len(),
            "{close} of {} sends came within 50 µs of the one before",
            gaps.len()
        );
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
