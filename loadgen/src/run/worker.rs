//! One worker of a run: it picks a key, an operation and a target, sends, and records
//! the latency in its total and in the second the request was due. An open-loop worker
//! sends at the next time the [`Pacer`] releases; a closed-loop one as soon as its last
//! request is done.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::pacer::Pacer;
use super::{RunConfig, Second};
use crate::client::{Failure, Route, Targets};
use crate::keys::{KeyGen, Mix, Op};
use crate::stats::Recorder;
use crate::workload::key_name;

/// A run's clock: warm-up from `start`, measured from `measure` until `end`.
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    /// When the warm-up begins.
    pub start: Instant,
    /// When the measured part begins.
    pub measure: Instant,
    /// When the run ends.
    pub end: Instant,
}

impl Phases {
    /// A run that begins now.
    pub fn from_now(warmup: Duration, duration: Duration) -> Phases {
        let start = Instant::now();
        let measure = start + warmup;
        Phases {
            start,
            measure,
            end: measure + duration,
        }
    }
}

/// Counters shared by the workers and the progress printer.
#[derive(Default)]
pub struct Live {
    /// Requests sent, warm-up included.
    pub sent: AtomicU64,
    /// Requests that succeeded, warm-up included.
    pub ok: AtomicU64,
    /// Requests that failed, warm-up included.
    pub errors: AtomicU64,
    /// One recorder per second of the measured part.
    pub timeline: Mutex<Vec<Recorder>>,
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

    /// The measured part so far, second by second.
    pub fn seconds(&self) -> Vec<Second> {
        self.timeline
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
            .collect()
    }
}

/// What the workers of a run share.
#[derive(Clone)]
pub struct Shared<F> {
    /// Their counters.
    pub live: Arc<Live>,
    /// Where requests go.
    pub targets: Arc<Targets>,
    /// Sends one request: `call(target, op, key)`.
    pub call: F,
    /// The run's clock.
    pub phases: Phases,
    /// The position of a scan, shared so that no two workers ask for the same key.
    pub scan: Arc<AtomicU64>,
    /// An open loop's send times.
    pub pacer: Option<Arc<Pacer>>,
}

/// One worker: its keys and its turn in the round robin.
pub struct Worker<F> {
    keys: KeyGen,
    mix: Mix,
    route: Route,
    turn: usize,
    shared: Shared<F>,
}

impl<F, Fut> Worker<F>
where
    F: Fn(usize, Op, String) -> Fut,
    Fut: Future<Output = Result<(), Failure>>,
{
    /// Worker `w` of `cfg`'s run.
    pub fn new(cfg: &RunConfig, w: usize, shared: Shared<F>) -> Worker<F> {
        let seed = cfg.seed ^ (w as u64 + 1) << 20;
        let keys = KeyGen::new(cfg.workload, cfg.keys, seed, shared.scan.clone());
        Worker {
            keys,
            mix: cfg.mix,
            route: cfg.route,
            turn: w,
            shared,
        }
    }

    /// Sends until the run ends; returns what it recorded of the measured part.
    pub async fn run(mut self) -> Recorder {
        let Phases { measure, end, .. } = self.shared.phases;
        let mut total = Recorder::default();
        let mut second = Recorder::default();
        let mut current = 0usize;
        while let Some(intended) = self.next_send(end).await {
            let result = self.send().await;
            let latency = intended.elapsed();
            let live = &self.shared.live;
            match &result {
                Ok(()) => live.ok.fetch_add(1, Relaxed),
                Err(_) => live.errors.fetch_add(1, Relaxed),
            };
            if intended < measure {
                continue;
            }
            let sec = (intended - measure).as_secs() as usize;
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
        self.shared.live.flush(current, &mut second);
        total
    }

    /// When the next request is due: now (closed loop), or the pacer's next send time
    /// once it has come (open loop); `None` from `end` on. Latency is charged from the
    /// time returned: a send time that came while every worker was busy is charged its
    /// wait (the server made it wait: no coordinated omission).
    async fn next_send(&mut self, end: Instant) -> Option<Instant> {
        let intended = match &self.shared.pacer {
            Some(pacer) => pacer.next().await?,
            None => Instant::now(),
        };
        (intended < end).then_some(intended)
    }

    /// Picks a key, an operation and a target, and sends.
    async fn send(&mut self) -> Result<(), Failure> {
        let key = key_name(self.keys.next_id());
        let op = if self.mix == Mix::GETS {
            Op::Get
        } else {
            self.mix.pick(self.keys.rng())
        };
        let to = self
            .shared
            .targets
            .pick(self.route, &key, self.turn, self.keys.rng());
        self.turn += 1;
        self.shared.live.sent.fetch_add(1, Relaxed);
        (self.shared.call)(to, op, key).await
    }
}
