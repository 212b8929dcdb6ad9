//! What churn, stall, graceful-leave and scale-out share: warmed uniform gets with one
//! event a third into the measured part, the node the event befalls, the origin's loads
//! per second around the event, and the failures it caused.

use std::future::Future;
use std::time::Duration;

use anyhow::bail;
use peercache::Ring;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::fixture::{Cluster, Ctx};
use super::outcome::Outcome;
use crate::client::{RingView, Route};
use crate::keys::{Mix, Workload};
use crate::origin::Origin;
use crate::procs::Node;
use crate::run::RunReport;
use crate::workload::key_name;

/// What a load with an event in it measured.
pub struct EventRun {
    /// The load.
    pub report: RunReport,
    /// When it began, from the start of the measured part.
    pub began: Duration,
    /// Origin loads in each second of the measured part.
    pub per_second: Vec<u64>,
}

/// Runs warmed uniform gets against `urls` for twice the steady scenarios' time, and
/// `event` a third into the measured part, sampling `origin`'s loads every second;
/// returns what the load measured and what the event returned.
pub async fn run<T>(
    ctx: &Ctx,
    label: &str,
    urls: Vec<String>,
    origin: &Origin,
    event: impl Future<Output = T>,
) -> anyhow::Result<(EventRun, T)> {
    let mut cfg = ctx.config(label, Workload::Uniform, ctx.s.keys, Mix::GETS, Route::Any);
    cfg.duration = ctx.s.duration * 2;
    let due = cfg.duration / 3;
    let measure = Instant::now() + cfg.warmup;
    let event = async {
        tokio::time::sleep_until(measure + due).await;
        (Instant::now() - measure, event.await)
    };
    let (report, per_second, (began, returned)) = tokio::join!(
        ctx.load(&cfg, urls),
        loads_per_second(origin, measure, cfg.duration.as_secs()),
        event
    );
    let run = EventRun {
        report: report?,
        began,
        per_second,
    };
    Ok((run, returned))
}

impl EventRun {
    /// When the event was due, from the start of the measured part: a third in.
    pub fn due(&self) -> Duration {
        self.report.config.duration / 3
    }

    /// Origin loads around the event at `at` seconds: the most in a second before it,
    /// the most in a second after it, and the total after it. The second just before
    /// the event counts as after: the sampler's seconds are only roughly aligned with
    /// the run's.
    pub fn spike(&self, at: f64) -> (u64, u64, u64) {
        let split = (at.floor() as usize)
            .saturating_sub(1)
            .min(self.per_second.len());
        let (before, after) = self.per_second.split_at(split);
        let most = |s: &[u64]| s.iter().copied().max().unwrap_or(0);
        (most(before), most(after), after.iter().sum())
    }

    /// The seconds of the load with errors: (first, last).
    pub fn error_span(&self) -> Option<(u64, u64)> {
        let mut with = self
            .report
            .timeline
            .iter()
            .filter(|s| s.errors > 0)
            .map(|s| s.t);
        let first = with.next()?;
        Some((first, with.next_back().unwrap_or(first)))
    }

    /// "no request failed", or how many failed in which seconds.
    pub fn failures(&self) -> String {
        match self.error_span() {
            None => "no request failed".to_owned(),
            Some((a, b)) => format!(
                "{} requests failed, in seconds t={a}..{b}",
                self.report.summary.errors
            ),
        }
    }

    /// The outcome's `extra`: what the timeline plot reads (`event`, `event_at_s`,
    /// `source_loads_per_second`), when the rings converged, and `more`.
    pub fn extra(&self, event: &str, at: f64, converged: Option<f64>, more: Value) -> Value {
        let mut extra = json!({
            "event": event, "event_at_s": at, "ring_converged_after_s": converged,
            "source_loads_per_second": self.per_second,
        });
        if let (Some(all), Value::Object(more)) = (extra.as_object_mut(), more) {
            all.extend(more);
        }
        extra
    }
}

/// [`run`] against all of `c`'s nodes but the last, the victim, with `event(victim,
/// others)` a third into the measured part; the others' counters around the load go to
/// `o`.
pub async fn on_victim<T>(
    ctx: &Ctx,
    c: &mut Cluster,
    label: &str,
    o: &mut Outcome,
    event: impl AsyncFnOnce(&mut Node, &mut [Node]) -> T,
) -> anyhow::Result<(EventRun, T)> {
    let n = c.nodes.len();
    let others = 0..n - 1;
    let (urls, before) = (c.urls(others.clone()), c.tally(ctx, others.clone()).await?);
    let (alive, victim) = c.nodes.split_at_mut(n - 1);
    let happened = event(&mut victim[0], alive);
    let (run, returned) = self::run(ctx, label, urls, &c.origin, happened).await?;
    o.counted(before, c.tally(ctx, others).await?);
    Ok((run, returned))
}

/// Samples the origin's load count once a second from `start` for `secs` seconds:
/// element `i` is the loads during second `i`.
async fn loads_per_second(origin: &Origin, start: Instant, secs: u64) -> Vec<u64> {
    let mut tick = tokio::time::interval_at(start, Duration::from_secs(1));
    let mut prev = None;
    let mut out = Vec::new();
    for _ in 0..=secs {
        tick.tick().await;
        let now = origin.loads();
        if let Some(p) = prev {
            out.push(now - p);
        }
        prev = Some(now);
    }
    out
}

/// The node an event befalls (killed, stopped, leaving): the cluster's last.
pub struct Victim {
    /// Its member id.
    pub id: String,
    /// How many of the keys it owned before the event.
    pub keys: u64,
}

/// Warms every key through all of `c`'s nodes (`scenario` needs two at least); returns
/// the last node, which the event befalls.
pub async fn warm_with_victim(ctx: &Ctx, c: &Cluster, scenario: &str) -> anyhow::Result<Victim> {
    let n = c.nodes.len();
    if n < 2 {
        bail!("{scenario} needs at least 2 nodes");
    }
    ctx.warm(c.urls(0..n), ctx.s.keys, false).await?;
    let ring = RingView::fetch(&ctx.http, &c.nodes[0].url).await?.ring;
    let id = c.nodes[n - 1].id.clone();
    let keys = keys_owned_by(&ring, &id, ctx.s.keys);
    Ok(Victim { id, keys })
}

/// How many of keys `0..keys` member `id` owns in `ring`.
pub fn keys_owned_by(ring: &Ring, id: &str, keys: u64) -> u64 {
    (0..keys)
        .filter(|k| ring.owner(&key_name(*k)).is_some_and(|m| m.id == id))
        .count() as u64
}
