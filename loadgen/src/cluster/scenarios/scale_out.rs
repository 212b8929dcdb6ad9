//! scale-out: start one more node a third into the run.

use serde_json::json;
use tokio::time::Instant;

use crate::client::RingView;
use crate::cluster::event::{self, keys_owned_by};
use crate::cluster::fixture::{Ctx, add_node};
use crate::cluster::outcome::{Outcome, met};
use crate::workload::key_name;

/// Warmed gets to every node while one more joins through etcd; skipped without etcd.
pub async fn scale_out(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let mut o = Outcome::new(
        "scale-out",
        "warmed uniform gets to all nodes; one more node joins (through etcd) a third into the run",
    );
    if ctx.etcd.is_none() {
        o.skipped =
            Some("needs --etcd: a static peer list is fixed when the nodes start".to_owned());
        return Ok(o);
    }
    let mut c = ctx.cluster(false, ctx.s.source_latency).await?;
    let n = c.nodes.len();
    let urls = c.urls(0..n);
    ctx.warm(urls.clone(), ctx.s.keys, false).await?;
    let ring_before = RingView::fetch(&ctx.http, &urls[0]).await?.ring;
    let ctx = &*ctx;
    let before = c.tally(ctx, 0..n).await?;
    let (nodes, origin, setup) = (&mut c.nodes, &c.origin, &c.setup);
    // Converged: from starting the process until every ring has it.
    let add = async {
        let added = Instant::now();
        add_node(&ctx.http, nodes, setup)
            .await
            .map(|_| added.elapsed())
    };
    let (run, joined) = event::run(ctx, "scale-out", urls, origin, add).await?;
    let converged = joined?;
    o.counted(before, c.tally(ctx, 0..n).await?);
    let ring_after = RingView::fetch(&ctx.http, &c.nodes[0].url).await?.ring;
    let new_id = c.nodes[n].id.clone();
    let moved = (0..ctx.s.keys)
        .filter(|id| {
            let key = key_name(*id);
            ring_before.owner(&key).map(|m| &m.id) != ring_after.owner(&key).map(|m| &m.id)
        })
        .count() as u64;
    let to_new = keys_owned_by(&ring_after, &new_id, ctx.s.keys);
    let add_s = run.began.as_secs_f64();
    let (base, peak, after_add) = run.spike(add_s);
    o.notes.push(format!(
        "started {new_id} at t={add_s:.1}s; {:.2} s later it was serving and in every ring",
        converged.as_secs_f64()
    ));
    o.notes.push(format!(
        "{moved} of {} keys ({:.1} %) changed owner, all of them to {new_id} ({to_new}); ideal share 1/{} = {:.1} %",
        ctx.s.keys,
        100.0 * moved as f64 / ctx.s.keys as f64,
        n + 1,
        100.0 / (n + 1) as f64
    ));
    let per_key = after_add as f64 / moved.max(1) as f64;
    let joiner = c.tally(ctx, n..n + 1).await?;
    let handed = joiner.counters.get("handoff_hits").copied().unwrap_or(0);
    o.notes.push(format!(
        "origin loads per second: at most {base} before, peak {peak} after; {after_add} loads from the second before the join on, for {moved} moved keys: {per_key:.3} per moved key (goal ≤ 0.1: {}); the new node answered {} misses with the previous owner's entry (handoff)",
        met(per_key <= 0.1),
        handed
    ));
    o.notes.push(run.failures());
    o.check("no errors", run.report.summary.errors == 0);
    o.check("only keys of the new node moved", moved == to_new);
    let more = json!({ "new_node": new_id, "keys": ctx.s.keys, "keys_moved": moved });
    o.extra = run.extra("node added", add_s, Some(converged.as_secs_f64()), more);
    o.run = Some(run.report);
    c.stop().await;
    Ok(o)
}
