//! ceiling: the local-hit loop against a server that answers a constant.

use serde_json::json;

use crate::client::{Route, Targets};
use crate::cluster::GROUP;
use crate::cluster::fixture::Ctx;
use crate::cluster::outcome::Outcome;
use crate::keys::{Mix, Workload};
use crate::procs::{Proc, free_addr};

/// The HTTP stack's floor, compared with `local` (the local-hit outcome) if it ran.
pub async fn ceiling(ctx: &mut Ctx, local: Option<&Outcome>) -> anyhow::Result<Outcome> {
    let mut o = Outcome::new(
        "ceiling",
        "the local-hit loop against a constant-answer handler on the same HTTP stack (axum, multi-threaded tokio), one process: the floor of the framework",
    );
    let addr = free_addr()?;
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "ceiling-server",
        "--addr",
        &addr,
        "--value-size",
        &ctx.s.value_size.to_string(),
    ]);
    let mut server = Proc::spawn("ceiling", cmd, &ctx.dir)?;
    let url = format!("http://{addr}");
    server
        .until_ok(&ctx.http, &format!("{url}/v1/groups/{GROUP}/keys/k"))
        .await?;
    let cfg = ctx.config(
        "ceiling",
        Workload::Uniform,
        ctx.s.keys,
        Mix::GETS,
        Route::Any,
    );
    let report = ctx.load_on(&cfg, Targets::plain(vec![url])).await?;
    server.stop().await;
    o.check("no errors", report.summary.errors == 0);
    if let Some(local) = local.and_then(|l| l.run.as_ref()) {
        let (ours, floor) = (&local.summary, &report.summary);
        let qps = ours.qps / floor.qps.max(1e-9);
        let p50 = ours.latency_ms.p50 / floor.latency_ms.p50.max(1e-9);
        let p99 = ours.latency_ms.p99 / floor.latency_ms.p99.max(1e-9);
        o.notes.push(format!(
            "local-hit reaches {qps:.2}× the ceiling's QPS, at {p50:.2}× its P50 and {p99:.2}× its P99"
        ));
        o.extra = json!({ "local_hit_qps_ratio": qps, "local_hit_p50_ratio": p50, "local_hit_p99_ratio": p99 });
    }
    o.run = Some(report);
    Ok(o)
}
