//! stall: one node stops (SIGSTOP) for a while a third into the run, then goes on
//! (SIGCONT): a stalled process keeps its connections open and answers nothing, which
//! only timeouts and suspicion reveal.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::client::RingView;
use crate::cluster::GROUP;
use crate::cluster::event::{self, Victim};
use crate::cluster::fixture::Ctx;
use crate::cluster::outcome::{Outcome, met};
use crate::procs::Node;
use crate::workload::key_name;

/// How long the node stays stopped.
const STALL: Duration = Duration::from_secs(5);
/// A write goes through a running node every this often during the stall.
const WRITE_EVERY: Duration = Duration::from_millis(20);
/// Writes this long after the stop began are timed as "once suspected".
const SUSPECTED_AFTER: Duration = Duration::from_secs(2);
/// The goal for a write's P99 once the stopped member is suspected.
const WRITE_P99_GOAL: Duration = Duration::from_millis(100);

/// Writes through `url` to keys `ring` gives to members other than `stopped` (so only
/// the invalidation to the stopped member can hold them up), one every
/// [`WRITE_EVERY`] until `until`: each write's start since `since`, and its latency
/// (`None`: it failed).
async fn write_through(
    http: &reqwest::Client,
    url: &str,
    ring: &peercache::Ring,
    stopped: &str,
    since: Instant,
    until: Instant,
) -> Vec<(Duration, Option<Duration>)> {
    let keys: Vec<String> = (0..10_000)
        .map(key_name)
        .filter(|k| ring.owner(k).is_some_and(|m| m.id != stopped))
        .take(64)
        .collect();
    let mut out = Vec::new();
    for i in 0.. {
        let started = Instant::now();
        if started >= until {
            break;
        }
        let key = &keys[i % keys.len()];
        let sent = http
            .put(format!("{url}/v1/groups/{GROUP}/keys/{key}"))
            .timeout(Duration::from_secs(5))
            .body(format!("written during the stall {i}"))
            .send()
            .await;
        let ok = sent.is_ok_and(|r| r.status().is_success());
        out.push((started - since, ok.then(|| started.elapsed())));
        tokio::time::sleep_until(started + WRITE_EVERY).await;
    }
    out
}

/// The `q` quantile of `latencies`.
fn quantile(latencies: &mut [Duration], q: f64) -> Duration {
    latencies.sort();
    let i = ((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1);
    latencies.get(i).copied().unwrap_or_default()
}

/// Warmed gets to every node but the last, which is stopped for [`STALL`] a third into
/// the run.
pub async fn stall(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let mut o = Outcome::new(
        "stall",
        "warmed uniform gets to all nodes but one; that node is stopped (SIGSTOP) for 5 s a third into the run, then continued",
    );
    let mut c = ctx.cluster(false, ctx.s.source_latency).await?;
    let Victim {
        id: victim_id,
        keys: victim_keys,
    } = event::warm_with_victim(ctx, &c, "stall").await?;
    let ctx = &*ctx;
    let ring = RingView::fetch(&ctx.http, &c.nodes[0].url).await?.ring;
    let pause = async |victim: &mut Node, alive: &mut [Node]| {
        let stopped = Instant::now();
        let writes = write_through(
            &ctx.http,
            &alive[0].url,
            &ring,
            &victim.id,
            stopped,
            stopped + STALL,
        );
        victim.proc.signal("STOP")?;
        let (writes, ()) = tokio::join!(writes, tokio::time::sleep(STALL));
        victim.proc.signal("CONT")?;
        anyhow::Ok(writes)
    };
    let (run, paused) = event::on_victim(ctx, &mut c, "stall", &mut o, pause).await?;
    let writes = paused?;
    let failed_writes = writes.iter().filter(|(_, l)| l.is_none()).count();
    let (mut early, mut suspected): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
    for (at, latency) in &writes {
        if let Some(l) = latency {
            match *at < SUSPECTED_AFTER {
                true => early.push(*l),
                false => suspected.push(*l),
            }
        }
    }
    let worst_early = early.iter().max().copied().unwrap_or_default();
    let write_p99 = quantile(&mut suspected, 0.99);
    let write_p50 = quantile(&mut suspected, 0.5);
    o.notes.push(format!(
        "writes through a running node to keys the others own, every {} ms during the stall: {} sent, {failed_writes} failed; from {} s into the stall (the member suspected) P50 {:.2} ms, P99 {:.2} ms (goal < {} ms: {}); the slowest in the first {} s: {:.0} ms",
        WRITE_EVERY.as_millis(),
        writes.len(),
        SUSPECTED_AFTER.as_secs(),
        write_p50.as_secs_f64() * 1e3,
        write_p99.as_secs_f64() * 1e3,
        WRITE_P99_GOAL.as_millis(),
        met(write_p99 < WRITE_P99_GOAL && !suspected.is_empty()),
        SUSPECTED_AFTER.as_secs(),
        worst_early.as_secs_f64() * 1e3,
    ));
    let at = run.due().as_secs_f64();
    o.notes.push(format!(
        "stopped {victim_id} at t={at:.1}s for {} s; it owned {victim_keys} of the {} keys",
        STALL.as_secs(),
        ctx.s.keys
    ));
    o.notes.push(run.failures());
    // The seconds of the stall (and the one after it, when waiting calls give up).
    let from = at.floor() as u64;
    let to = from + STALL.as_secs() + 1;
    let during: Vec<_> = (run.report.timeline.iter())
        .filter(|s| s.t >= from && s.t <= to)
        .collect();
    let worst = during.iter().map(|s| s.p99_ms).fold(0.0, f64::max);
    let outside = (run.report.timeline.iter())
        .filter(|s| s.t < from || s.t > to)
        .map(|s| s.p99_ms)
        .fold(0.0, f64::max);
    o.notes.push(format!(
        "P99 during the stall (the worst of seconds t={from}..{to}): {worst:.2} ms; the worst second outside it: {outside:.2} ms"
    ));
    let (base, peak, after) = run.spike(at);
    o.notes.push(format!(
        "origin loads per second: at most {base} before the stall, peak {peak} from it on; {after} loads from the second before it on, for {victim_keys} keys of the stopped node: the others suspect it ({} peer errors) and send its keys to the member next to it on the ring ({} such gets), which loads them while it is suspected; when it answers again their copies are dropped and its keys read from it",
        o.delta("peer_errors"),
        o.delta("failover_gets")
    ));
    o.check("no request failed", run.report.summary.errors == 0);
    o.check("no write failed during the stall", failed_writes == 0);
    let more = json!({ "victim": victim_id, "victim_keys": victim_keys, "stall_s": STALL.as_secs(), "p99_during_stall_ms": worst, "p99_outside_ms": outside, "write_p99_suspected_ms": write_p99.as_secs_f64() * 1e3, "write_p50_suspected_ms": write_p50.as_secs_f64() * 1e3, "write_worst_early_ms": worst_early.as_secs_f64() * 1e3, "writes": writes.len() });
    o.extra = run.extra("SIGSTOP", at, None, more);
    o.run = Some(run.report);
    c.stop().await;
    Ok(o)
}
