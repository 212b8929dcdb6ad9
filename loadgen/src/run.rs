//! The load loop: closed (fixed concurrency) or open (fixed rate, latency from the
//! intended send time), a warm-up, per-second progress and a per-second timeline.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use bytes::Bytes;

use crate::client::{Client, Failure, Route, Targets};
use crate::keys::{KeyGen, Mix, Op, Workload};
use crate::stats::{Recorder, Summary, fmt_ms};
use crate::workload::key_name;

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

/// The times worker `worker` of `workers` should send at, for `rate` requests per
/// second in total: its own `rate / workers`, offset so the workers interleave.
#[derive(Debug, Clone)]
pub struct Schedule {
    start: Instant,
    period: f64,
    offset: f64,
    next: u64,
}

impl Schedule {
    /// The schedule of one worker from `start`.
    pub fn new(start: Instant, rate: f64, worker: usize, workers: usize) -> Self {
        let period = workers as f64 / rate;
        Schedule {
            start,
            period,
            offset: period * worker as f64 / workers as f64,
            next: 0,
        }
    }

    /// The next intended send time.
    pub fn next_send(&mut self) -> Instant {
        let at = self.offset + self.period * self.next as f64;
        self.next += 1;
        self.start + Duration::from_secs_f64(at)
    }
}

/// Counters shared by the workers and the progress printer.
#[derive(Default)]
struct Live {
    sent: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    /// One recorder per second of the measured part.
    timeline: Mutex<Vec<Recorder>>,
}

impl Live {
    fn flush(&self, second: usize, rec: &mut Recorder) {
        let mut timeline = self.timeline.lock();
        if timeline.len() <= second {
            timeline.resize_with(second + 1, Recorder::default);
        }
        timeline[second].merge(rec);
        *rec = Recorder::default();
    }
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
    Fut: Future<Output = Result<(), Failure>> + Send,
{
    let live = Arc::new(Live::default());
    let start = Instant::now();
    let measure_start = start + cfg.warmup;
    let end = measure_start + cfg.duration;
    let scan = Arc::new(AtomicU64::new(0));
    let workers = cfg.load.workers().max(1);

    let progress = cfg.progress.then(|| {
        let (live, label) = (live.clone(), cfg.label.clone());
        tokio::spawn(print_progress(live, label, start, measure_start, end))
    });

    let mut tasks = Vec::with_capacity(workers);
    for w in 0..workers {
        let mut keys = KeyGen::new(
            cfg.workload,
            cfg.keys,
            cfg.seed ^ (w as u64 + 1) << 20,
            scan.clone(),
        );
        let mut schedule = match cfg.load {
            Load::Open { rate, .. } => Some(Schedule::new(start, rate, w, workers)),
            Load::Closed { .. } => None,
        };
        let (live, targets, call, mix, route) = (
            live.clone(),
            targets.clone(),
            call.clone(),
            cfg.mix,
            cfg.route,
        );
        tasks.push(tokio::spawn(async move {
            let mut total = Recorder::default();
            let mut second = Recorder::default();
            let mut current = 0usize;
            let mut turn = w;
            loop {
                let intended = match schedule.as_mut() {
                    Some(s) => {
                        let at = s.next_send();
                        if at >= end {
                            break;
                        }
                        tokio::time::sleep_until(at).await;
                        at
                    }
                    None => Instant::now(),
                };
                if intended >= end {
                    break;
                }
                let key = key_name(keys.next_id());
                let op = if mix == Mix::GETS {
                    Op::Get
                } else {
                    mix.pick(keys.rng())
                };
                let to = targets.pick(route, &key, turn, keys.rng());
                turn += 1;
                live.sent.fetch_add(1, Relaxed);
                let result = call(to, op, key).await;
                let latency = intended.elapsed();
                match &result {
                    Ok(()) => live.ok.fetch_add(1, Relaxed),
                    Err(_) => live.errors.fetch_add(1, Relaxed),
                };
                if intended < measure_start {
                    continue;
                }
                let sec = (intended - measure_start).as_secs() as usize;
                if sec != current {
                    live.flush(current, &mut second);
                    current = sec;
                }
                for rec in [&mut total, &mut second] {
                    match &result {
                        Ok(()) => rec.ok(latency),
                        Err(kind) => rec.error(kind),
                    }
                }
            }
            live.flush(current, &mut second);
            total
        }));
    }
    let mut total = Recorder::default();
    for task in tasks {
        total.merge(&task.await.expect("a load worker panicked"));
    }
    if let Some(p) = progress {
        p.abort();
    }
    let timeline = live
        .timeline
        .lock()
        .iter()
        .enumerate()
        .map(|(t, r)| {
            let s = r.summary(Duration::from_secs(1));
            Second {
                t: t as u64,
                ok: s.ok,
                errors: s.errors,
                p50_ms: s.latency_ms.p50,
                p99_ms: s.latency_ms.p99,
            }
        })
        .collect();
    RunReport {
        config: cfg.clone(),
        summary: total.summary(cfg.duration),
        sent: live.sent.load(Relaxed),
        timeline,
    }
}

async fn print_progress(
    live: Arc<Live>,
    label: String,
    start: Instant,
    measure: Instant,
    end: Instant,
) {
    // A quarter second past each whole second, when the workers have handed in the
    // second that ended.
    let first = start + Duration::from_millis(1250);
    let mut tick = tokio::time::interval_at(first, Duration::from_secs(1));
    let (mut ok0, mut err0) = (0, 0);
    loop {
        let now = tick.tick().await;
        let (ok, err) = (live.ok.load(Relaxed), live.errors.load(Relaxed));
        let phase = if now <= measure {
            "warm-up".to_owned()
        } else {
            let t = (now - measure).as_secs() as usize;
            // The second that just ended, as far as the workers have handed it in.
            let p99 = live
                .timeline
                .lock()
                .get(t.saturating_sub(1))
                .map(|r| fmt_ms(r.summary(Duration::from_secs(1)).latency_ms.p99))
                .unwrap_or_else(|| "-".into());
            format!("{t:>3}s/{}s  p99 {p99:>8}", (end - measure).as_secs())
        };
        eprintln!(
            "  [{label}] {phase}  {:>8} req/s  errors {:>5}",
            ok - ok0,
            err - err0
        );
        (ok0, err0) = (ok, err);
    }
}

/// The run's result as a table, for a terminal.
pub fn table(report: &RunReport) -> String {
    let s = &report.summary;
    let l = &s.latency_ms;
    let mut out = format!(
        "{:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}\n",
        "qps", "p50", "p90", "p99", "p99.9", "max", "mean", "errors"
    );
    out += &format!(
        "{:>10.0} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}\n",
        s.qps,
        fmt_ms(l.p50),
        fmt_ms(l.p90),
        fmt_ms(l.p99),
        fmt_ms(l.p999),
        fmt_ms(l.max),
        fmt_ms(l.mean),
        s.errors
    );
    for (kind, n) in &s.errors_by_kind {
        out += &format!("  errors {kind}: {n}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test(start_paused = true)]
    async fn open_loop_schedules_the_rate_evenly_over_workers() {
        let start = Instant::now();
        let mut sends: Vec<Instant> = (0..4)
            .flat_map(|w| {
                let mut s = Schedule::new(start, 1000.0, w, 4);
                (0..250).map(move |_| s.next_send())
            })
            .collect();
        sends.sort();
        // 1,000 sends in the first second, one every millisecond.
        assert_eq!(sends.len(), 1000);
        assert!(sends.iter().all(|t| *t < start + Duration::from_secs(1)));
        for (i, t) in sends.iter().enumerate() {
            let off = (*t - start).as_secs_f64();
            assert!((off - i as f64 / 1000.0).abs() < 1e-6, "send {i} at {off}");
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
