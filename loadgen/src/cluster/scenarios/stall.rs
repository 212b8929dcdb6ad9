//! stall: one node stops (SIGSTOP) for a while a third into the run, then goes on
//! (SIGCONT): a stalled process keeps its connections open and answers nothing, which
//! only timeouts and suspicion reveal.

use std::time::Duration;

use serde_json::json;

use crate::cluster::event::{self, Victim};
use crate::cluster::fixture::Ctx;
use crate::cluster::outcome::Outcome;
use crate::procs::Node;

/// How long the node stays stopped.
const STALL: Duration = Duration::from_secs(5);

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
    let pause = async |victim: &mut Node, _: &mut [Node]| {
        victim.proc.signal("STOP")?;
        tokio::time::sleep(STALL).await;
        victim.proc.signal("CONT")
    };
    let (run, paused) = event::on_victim(ctx, &mut c, "stall", &mut o, pause).await?;
    paused?;
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
        "origin loads per second: at most {base} before the stall, peak {peak} from it on; {after} loads from the second before it on, for {victim_keys} keys of the stopped node: the others suspect it ({} peer errors) and load its keys themselves while it is suspected",
        o.delta("peer_errors")
    ));
    o.check("no request failed", run.report.summary.errors == 0);
    let more = json!({ "victim": victim_id, "victim_keys": victim_keys, "stall_s": STALL.as_secs(), "p99_during_stall_ms": worst, "p99_outside_ms": outside });
    o.extra = run.extra("SIGSTOP", at, None, more);
    o.run = Some(run.report);
    c.stop().await;
    Ok(o)
}
