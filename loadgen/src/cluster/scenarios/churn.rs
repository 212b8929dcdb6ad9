//! churn: kill -9 one node a third into the run; the load goes to the others.

use std::time::Duration;

use anyhow::bail;
use serde_json::json;
use tokio::time::Instant;

use crate::client::RingView;
use crate::cluster::event::{self, keys_owned_by};
use crate::cluster::fixture::Ctx;
use crate::cluster::outcome::Outcome;
use crate::procs::until_rings_agree;

/// Warmed gets to every node but the last, which is killed a third into the run.
pub async fn churn(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let mut o = Outcome::new(
        "churn",
        "warmed uniform gets to all nodes but one; that node is killed (SIGKILL) a third into the run",
    );
    let mut c = ctx.cluster(false, ctx.s.source_latency).await?;
    let n = c.nodes.len();
    if n < 2 {
        bail!("churn needs at least 2 nodes");
    }
    let survivors = c.urls(0..n - 1);
    ctx.warm(c.urls(0..n), ctx.s.keys, false).await?;
    let ring = RingView::fetch(&ctx.http, &survivors[0]).await?.ring;
    let victim_id = c.nodes[n - 1].id.clone();
    let victim_keys = keys_owned_by(&ring, &victim_id, ctx.s.keys);
    let ctx = &*ctx;
    let before = c.tally(ctx, 0..n - 1).await?;
    let (nodes, origin) = (&mut c.nodes, &c.origin);
    // Converged: from the kill until the survivors' rings no longer have the victim.
    let kill = async {
        let (alive, victim) = nodes.split_at_mut(n - 1);
        victim[0].proc.kill9();
        let killed = Instant::now();
        let gone = until_rings_agree(&ctx.http, alive, Duration::from_secs(15)).await;
        gone.ok().map(|_| killed.elapsed())
    };
    let (run, converged) = event::run(ctx, "churn", survivors, origin, kill).await?;
    o.counted(before, c.tally(ctx, 0..n - 1).await?);
    let kill_s = run.due().as_secs_f64();
    o.notes.push(format!(
        "killed {victim_id} at t={kill_s:.1}s; it owned {victim_keys} of the {} keys",
        ctx.s.keys
    ));
    let mut failures = run.failures();
    if let Some((_, last)) = run.error_span() {
        let (end, after) = (last + 1, (last + 1) as f64 - kill_s);
        failures.push_str(&format!(
            "; none after t={end}s ({after:.1} s after the kill)"
        ));
    }
    o.notes.push(failures);
    o.notes.push(match converged {
        Some(d) => format!("the survivors' rings dropped {victim_id} {:.2} s after the kill", d.as_secs_f64()),
        None if ctx.etcd.is_none() => format!("static membership: {victim_id} stays in the rings; its keys are loaded by whoever is asked, each kept for the 1 s fallback TTL"),
        None => format!("the survivors' rings still had {victim_id} 15 s after the kill"),
    });
    let (base, peak, after_kill) = run.spike(kill_s);
    o.notes.push(format!(
        "origin loads per second: at most {base} before the kill, peak {peak} after it; {after_kill} loads from the second before the kill on, for {victim_keys} orphaned keys"
    ));
    if ctx.etcd.is_some() {
        o.notes.push(format!(
            "until the rings drop the dead node, a survivor whose peer call fails ({} peer errors) loads the key itself and keeps it only for the 1 s fallback TTL, so orphaned keys are loaded about once a second per survivor; then their new owners load them once",
            o.delta("peer_errors")
        ));
        o.check("the rings drop the killed node", converged.is_some());
    }
    let converged = converged.map(|d| d.as_secs_f64());
    let more = json!({ "victim": victim_id, "victim_keys": victim_keys, "error_seconds": run.error_span() });
    o.extra = run.extra("kill -9", kill_s, converged, more);
    o.run = Some(run.report);
    c.stop().await;
    Ok(o)
}
