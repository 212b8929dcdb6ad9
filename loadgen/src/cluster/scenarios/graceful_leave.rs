//! graceful-leave: one node gets SIGTERM a third into the run: it leaves the membership,
//! drains and exits, and the others take over its keys.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::cluster::event::{self, Victim};
use crate::cluster::fixture::Ctx;
use crate::cluster::outcome::{Outcome, met};
use crate::procs::{Node, until_rings_agree};

/// How long the leaver may take to exit, and the others' rings to drop it.
const LIMIT: Duration = Duration::from_secs(15);
/// The goal: origin loads of the leaver's keys after it left, per key.
const GOAL: f64 = 0.1;

/// Warmed gets to every node but the last, which gets SIGTERM a third into the run;
/// skipped without etcd.
pub async fn graceful_leave(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let mut o = Outcome::new(
        "graceful-leave",
        "warmed uniform gets to all nodes but one; that node gets SIGTERM a third into the run: it leaves the membership (etcd), drains and exits",
    );
    if ctx.etcd.is_none() {
        o.skipped = Some(
            "needs --etcd: with a static peer list the others keep a node that left in their rings"
                .to_owned(),
        );
        return Ok(o);
    }
    let mut c = ctx.cluster(false, ctx.s.source_latency).await?;
    let Victim { id, keys } = event::warm_with_victim(ctx, &c, "graceful-leave").await?;
    let ctx = &*ctx;
    // From the signal: when the leaver exited (and how), and when the others' rings no
    // longer had it.
    let leave = async |leaver: &mut Node, alive: &mut [Node]| {
        let signalled = Instant::now();
        leaver.proc.signal("TERM")?;
        let exit = async {
            let status = leaver.proc.exited_within(LIMIT).await;
            status.map(|s| (s, signalled.elapsed()))
        };
        let (exited, dropped) = tokio::join!(exit, until_rings_agree(&ctx.http, alive, LIMIT));
        anyhow::Ok((exited, dropped.ok()))
    };
    let (run, left) = event::on_victim(ctx, &mut c, "graceful-leave", &mut o, leave).await?;
    let (exited, dropped) = left?;
    let at = run.began.as_secs_f64();
    o.notes.push(format!(
        "sent SIGTERM to {id} at t={at:.1}s; it owned {keys} of the {} keys",
        ctx.s.keys
    ));
    o.notes.push(match (&exited, dropped) {
        (Some((status, after)), Some(ring)) => format!(
            "it exited ({status}) {:.2} s after the signal; the others' rings dropped it after {:.2} s",
            after.as_secs_f64(),
            ring.as_secs_f64()
        ),
        _ => format!(
            "{} {} s after the signal",
            match exited {
                None => "it was still running",
                Some(_) => "the others' rings still had it",
            },
            LIMIT.as_secs()
        ),
    });
    o.notes.push(run.failures());
    let (base, peak, after) = run.spike(at);
    let per_key = after as f64 / keys.max(1) as f64;
    o.notes.push(format!(
        "origin loads per second: at most {base} before the leave, peak {peak} after it; {after} loads from the second before the leave on, for the {keys} keys it owned: {per_key:.2} per key (goal ≤ {GOAL}: {}); {} peer errors",
        met(per_key <= GOAL),
        o.delta("peer_errors")
    ));
    o.check("no request failed", run.report.summary.errors == 0);
    o.check(
        "the leaver exits by itself, successfully",
        exited.is_some_and(|(status, _)| status.success()),
    );
    o.check("the others' rings drop the leaver", dropped.is_some());
    let more = json!({
        "leaver": id, "leaver_keys": keys, "loads_per_leaver_key": per_key, "goal_loads_per_key": GOAL,
        "exited_after_s": exited.map(|(_, d)| d.as_secs_f64()),
    });
    let ring_s = dropped.map(|d| d.as_secs_f64());
    o.extra = run.extra("SIGTERM", at, ring_s, more);
    o.run = Some(run.report);
    c.stop().await;
    Ok(o)
}
