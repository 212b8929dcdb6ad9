//! stampede: thousands of concurrent gets of a few cold keys, over all nodes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::client::{Route, http_failure};
use crate::cluster::GROUP;
use crate::cluster::fixture::Ctx;
use crate::cluster::outcome::Outcome;
use crate::keys::{Mix, Workload};
use crate::run::{Load, RunConfig, RunReport};
use crate::stats::Recorder;
use crate::workload::key_name;

/// Every origin load must be joined by all the other gets of its key, on every node.
pub async fn stampede(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let (keys, clients) = (ctx.s.stampede_keys, ctx.s.stampede_clients);
    let mut o = Outcome::new(
        "stampede",
        &format!(
            "{clients} concurrent gets of each of {keys} cold keys, sent at once round robin over all nodes; the origin takes {:?} per load",
            ctx.s.stampede_latency
        ),
    );
    let c = ctx.cluster(false, ctx.s.stampede_latency).await?;
    let all = 0..c.nodes.len();
    let before = c.tally(ctx, all.clone()).await?;
    let (rec, elapsed) = burst(&c.urls(all.clone()), keys, clients).await?;
    o.counted(before, c.tally(ctx, all).await?);
    let per_key: BTreeMap<String, u64> = (0..keys)
        .map(|id| {
            let key = key_name(id);
            let n = c.origin.per_key().get(&key).copied().unwrap_or(0);
            (key, n)
        })
        .collect();
    let summary = rec.summary(elapsed);
    o.check("no errors", summary.errors == 0);
    o.check(
        "exactly one origin load per key",
        per_key.values().all(|n| *n == 1),
    );
    o.notes.push(format!(
        "origin loads per key: {}; {} gets joined a load or peer call already in flight on their node; {} peer calls",
        per_key
            .values()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        o.delta("loads_deduped"),
        o.peer_loads
    ));
    let total = keys as usize * clients;
    o.extra =
        json!({ "loads_per_key": per_key, "gets": total, "elapsed_s": elapsed.as_secs_f64() });
    let cfg = RunConfig {
        load: Load::Closed { concurrency: total },
        duration: elapsed,
        warmup: Duration::ZERO,
        ..ctx.config("stampede", Workload::Uniform, keys, Mix::GETS, Route::Any)
    };
    o.run = Some(RunReport {
        config: cfg,
        summary,
        sent: total as u64,
        timeline: Vec::new(),
        pacer_late_ms: None,
    });
    c.stop().await;
    Ok(o)
}

/// Sends `clients` gets of each of keys `0..keys` at once, key i mod K through node
/// (i / K) mod N so that every key reaches every node; returns their latencies and the
/// time from the first send to the last answer.
async fn burst(urls: &[String], keys: u64, clients: usize) -> anyhow::Result<(Recorder, Duration)> {
    let http = crate::client::http_builder()
        .timeout(Duration::from_secs(20))
        .build()?;
    let total = keys as usize * clients;
    let barrier = Arc::new(tokio::sync::Barrier::new(total));
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let (key, node) = (i as u64 % keys, (i / keys as usize) % urls.len());
        let url = format!("{}/v1/groups/{GROUP}/keys/{}", urls[node], key_name(key));
        let (http, barrier) = (http.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let sent = Instant::now();
            let result = match http.get(url).send().await {
                Ok(r) if r.status().is_success() => {
                    r.bytes().await.map(drop).map_err(|_| "io".to_owned())
                }
                Ok(r) => Err(format!("http {}", r.status().as_u16())),
                Err(e) => Err(http_failure(&e)),
            };
            (sent, sent.elapsed(), result)
        }));
    }
    let mut rec = Recorder::default();
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    for task in tasks {
        let (sent, latency, result) = task.await?;
        first = Some(first.map_or(sent, |f| f.min(sent)));
        last = Some(last.map_or(sent + latency, |l| l.max(sent + latency)));
        match result {
            Ok(()) => rec.ok(latency),
            Err(kind) => rec.error(&kind),
        }
    }
    let elapsed = last.zip(first).map_or(Duration::ZERO, |(l, f)| l - f);
    Ok((rec, elapsed))
}
