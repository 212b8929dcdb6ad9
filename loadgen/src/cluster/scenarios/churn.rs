//! churn: kill -9 one node a third into the run; the load goes to the others.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::cluster::event::{self, Victim};
use crate::cluster::fixture::Ctx;
use crate::cluster::outcome::Outcome;
use crate::procs::{Node, until_rings_agree};

/// Warmed gets to every node but the last, which is killed a third into the run.
pub async fn churn(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let mut o = Outcome::new(
        "churn",
        "warmed uniform gets to all nodes but one; that node is killed (SIGKILL) a third into the run",
    );
    let mut c = ctx.cluster(false, ctx.s.source_latency).await?;
    let Victim {
        id: victim_id,
        keys: victim_keys,
    } = event::warm_with_victim(ctx, &c, "churn").await?;
    let n = c.nodes.len();
    let ctx = &*ctx;
    // Converged: from the kill until the survivors' rings no longer have the victim.
    let kill = async |victim: &mut Node, alive: &mut [Node]| {
        victim.proc.kill9();
        let killed = Instant::now();
        let gone = until_rings_agree(&ctx.http, alive, Duration::from_secs(15)).await;
        gone.ok().map(|_| killed.elapsed())
    };
    let (run, converged) = event::on_victim(ctx, &mut c, "churn", &mut o, kill).await?;
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
        None if ctx.etcd.is_none() => format!("static membership: {victim_id} stays in the rings, suspected and probed at most every 30 s; each of its keys is loaded by the member next to it on the ring, kept there up to the hot TTL (the staleness bound of copies), so about once per hot TTL for as long as it is dead"),
        None => format!("the survivors' rings still had {victim_id} 15 s after the kill"),
    });
    let (base, peak, after_kill) = run.spike(kill_s);
    let per_key_survivor = after_kill as f64 / (victim_keys * (n as u64 - 1)).max(1) as f64;
    o.notes.push(format!(
        "origin loads per second: at most {base} before the kill, peak {peak} after it; {after_kill} loads from the second before the kill on, for {victim_keys} orphaned keys: {per_key_survivor:.2} per orphaned key per survivor"
    ));
    o.notes.push(format!(
        "a survivor whose call to the dead node fails suspects it ({} peer errors: the failed calls and the refusals while suspected) and sends the dead node's keys to the member that would own them without it ({} such gets): each is loaded there once and kept while the dead node is suspected, up to the hot TTL",
        o.delta("peer_errors"),
        o.delta("failover_gets")
    ));
    if ctx.etcd.is_some() {
        o.notes.push(format!(
            "once the rings drop the dead node, that member owns those keys and keeps its copies as owner until they expire ({} kept), then loads each once more",
            o.delta("copies_promoted")
        ));
        o.check("the rings drop the killed node", converged.is_some());
    }
    let converged = converged.map(|d| d.as_secs_f64());
    let more = json!({ "victim": victim_id, "victim_keys": victim_keys, "error_seconds": run.error_span(), "loads_per_orphan_per_survivor": per_key_survivor });
    o.extra = run.extra("kill -9", kill_s, converged, more);
    o.run = Some(run.report);
    c.stop().await;
    Ok(o)
}
