//! miss: every get asks for a key never asked before.

use serde_json::json;

use crate::client::Route;
use crate::cluster::fixture::Ctx;
use crate::cluster::outcome::Outcome;
use crate::keys::{Mix, Workload};

/// A scan over a key space too large to repeat: each get is a load by the key's owner.
pub async fn miss(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let mut o = Outcome::new(
        "miss",
        "every get asks for a new key (a scan), so each one is loaded from the slow origin by the key's owner",
    );
    let c = ctx.cluster(false, ctx.s.source_latency).await?;
    let cfg = ctx.config("miss", Workload::Scan, 1 << 40, Mix::GETS, Route::Any);
    let report = c.measure(ctx, &cfg, &mut o).await?;
    let per_key = c.origin.per_key();
    let most = per_key.values().copied().max().unwrap_or(0);
    let bound = ctx.s.concurrency as f64 / ctx.s.source_latency.as_secs_f64().max(1e-3);
    o.notes.push(format!(
        "{} distinct keys asked, {} origin loads, at most {most} per key; the origin allows at most {bound:.0} gets/s at concurrency {} and {:?} per load",
        report.sent, o.source_loads, ctx.s.concurrency, ctx.s.source_latency
    ));
    o.check("no errors", report.summary.errors == 0);
    o.check(
        "origin loads == distinct keys asked",
        o.source_loads == report.sent,
    );
    o.check("no key loaded twice", most == 1);
    o.extra = json!({ "distinct_keys": report.sent, "most_loads_of_one_key": most, "qps_bound_by_source": bound });
    o.run = Some(report);
    c.stop().await;
    Ok(o)
}
