//! zipf-mixed: YCSB-B-like.

use crate::client::Route;
use crate::cluster::fixture::Ctx;
use crate::cluster::outcome::Outcome;
use crate::keys::{Mix, Workload};

/// Zipf 0.99 reads with 5 % writes from a cold start, hot copies on.
pub async fn zipf_mixed(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let mut o = Outcome::new(
        "zipf-mixed",
        "zipf 0.99 over the key space, 95 % gets and 5 % sets (YCSB-B-like), cold start, hot copies on",
    );
    let c = ctx.cluster(true, ctx.s.source_latency).await?;
    let mix: Mix = "get=95,set=5".parse().map_err(anyhow::Error::msg)?;
    let cfg = ctx.config(
        "zipf-mixed",
        Workload::Zipf(0.99),
        ctx.s.zipf_keys,
        mix,
        Route::Any,
    );
    let report = c.measure(ctx, &cfg, &mut o).await?;
    o.check("no errors", report.summary.errors == 0);
    o.run = Some(report);
    c.stop().await;
    Ok(o)
}
