//! hotspot: one key takes half of all gets, read through every node, while the other
//! keys are read from their owners. Its owner should find it hot within a detection
//! window and flag it, so the other nodes keep copies and stop asking it: the run
//! should then be about as fast as the same cluster's uniform local-hit run.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;
use tokio::time::Instant;

use crate::client::{RingView, Route, Targets, get_json};
use crate::cluster::GROUP;
use crate::cluster::fixture::{Cluster, Ctx};
use crate::cluster::outcome::{Outcome, Tally, met};
use crate::keys::{Mix, Workload};
use crate::run::RunReport;
use crate::workload::key_name;

/// The hot key's share of the gets.
const HOT_SHARE: f64 = 0.5;
/// How often the owner's `/v1/hotkeys` is read while the hot load runs.
const POLL: Duration = Duration::from_millis(50);
/// The goals: QPS against uniform local-hit, the owner's share of the hot key's
/// gets after detection, seconds from the hot load's start to detection.
const QPS_GOAL: f64 = 0.9;
const SHARE_GOAL: f64 = 0.1;
const DETECT_GOAL_S: f64 = 1.0;

/// Warmed keys: a uniform local-hit run, one where key 0 takes [`HOT_SHARE`] of the
/// gets, sent round robin through every node (the others still to their owners), and a
/// uniform one again.
pub async fn hotspot(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let mut o = Outcome::new(
        "hotspot",
        "warmed keys: a uniform local-hit run, a run where one key takes 50 % of the gets, sent round robin through every node (the others to their owners), and the uniform run again; the hot key's owner should find it hot and the other nodes keep copies",
    );
    let keys = ctx.s.keys;
    if keys < 2 {
        bail!("hotspot needs at least 2 keys");
    }
    let c = ctx.cluster(false, ctx.s.source_latency).await?;
    let urls = c.urls(0..c.nodes.len());
    ctx.warm(urls.clone(), keys, false).await?;
    let ctx = &*ctx;
    let uniform_cfg = ctx.config(
        "hotspot-uniform",
        Workload::Uniform,
        keys,
        Mix::GETS,
        Route::Owner,
    );
    // Uniform runs before and after the hot one, so drift in the machine's speed over
    // the scenario (it shares two cores with everything else) weighs on both sides.
    let before = ctx.load(&uniform_cfg, urls.clone()).await?;
    let hot = hot_run(ctx, &c, &mut o).await?;
    let after = ctx.load(&uniform_cfg, urls).await?;
    let errors = before.summary.errors + after.summary.errors + hot.report.summary.errors;
    o.check("no errors", errors == 0);
    o.check("no source loads: every key was warmed", o.source_loads == 0);
    note(&mut o, [&before, &after], &hot, c.nodes.len());
    o.run = Some(hot.report);
    c.stop().await;
    Ok(o)
}

/// What the hot run measured.
struct HotRun {
    key: String,
    /// The key's owner's member id.
    owner: String,
    report: RunReport,
    /// When its owner first listed the key, if it did.
    detected: Option<Duration>,
    /// The owner's peer gets after that, against the key's gets.
    share: Option<OwnerShare>,
}

/// Runs the hot load, reading the owner's `/v1/hotkeys` meanwhile, with the counters of
/// all nodes around it in `o`.
async fn hot_run(ctx: &Ctx, c: &Cluster, o: &mut Outcome) -> anyhow::Result<HotRun> {
    let (keys, n) = (ctx.s.keys, c.nodes.len());
    let key = key_name(0);
    let urls = c.urls(0..n);
    let ring = RingView::fetch(&ctx.http, &urls[0]).await?.ring;
    let owner_id = ring.owner(&key).context("an empty ring")?.id.clone();
    let owner = (c.nodes.iter().position(|n| n.id == owner_id)).context("the owner is no node")?;
    let targets = Targets::discover(&ctx.http, urls)
        .await?
        .spreading(key.clone());
    let workload = Workload::Hotspot {
        fraction: 1.0 / keys as f64,
        prob: HOT_SHARE,
    };
    let cfg = ctx.config("hotspot", workload, keys, Mix::GETS, Route::Owner);
    let before = c.tally(ctx, 0..n).await?;
    let begun = Instant::now();
    let until = begun + cfg.warmup + cfg.duration;
    let (report, detected) = tokio::join!(
        ctx.load_on(&cfg, targets),
        detect(ctx, c, owner, &key, begun, until)
    );
    let (report, detected) = (report?, detected?);
    let end = Counts::read(ctx, c, owner).await?;
    let share = (detected.as_ref()).map(|d| OwnerShare::between(&d.counts, &end));
    o.counted(before, end.all);
    Ok(HotRun {
        key,
        owner: owner_id,
        report,
        detected: detected.map(|d| d.after),
        share,
    })
}

/// The figures against the goals, in notes and `extra`.
fn note(o: &mut Outcome, uniform: [&RunReport; 2], hot: &HotRun, nodes: usize) {
    let HotRun { key, owner, .. } = hot;
    let (first, last) = (uniform[0].summary.qps, uniform[1].summary.qps);
    let (base, ours) = ((first + last) / 2.0, hot.report.summary.qps);
    let ratio = ours / base.max(1e-9);
    o.notes.push(format!(
        "uniform local-hit {first:.0} QPS before the hot run and {last:.0} after (mean {base:.0}), hotspot {ours:.0} QPS: {ratio:.2}× (goal ≥ {QPS_GOAL}×: {})",
        met(ratio >= QPS_GOAL)
    ));
    let detected = hot.detected.map(|d| d.as_secs_f64());
    o.notes.push(match detected {
        Some(s) => format!(
            "{key} (owned by {owner}) was listed at its owner's /v1/hotkeys {s:.2} s after the hot load began (read every {} ms; goal ≤ {DETECT_GOAL_S} s: {})",
            POLL.as_millis(),
            met(s <= DETECT_GOAL_S)
        ),
        None => format!(
            "{key} (owned by {owner}) was never listed at its owner's /v1/hotkeys during the hot load (goal ≤ {DETECT_GOAL_S} s: missed)"
        ),
    });
    let share = hot.share.as_ref();
    o.notes.push(match share {
        Some(s) => format!(
            "after detection the owner answered {} peer gets, {:.1} % of the hot key's about {:.0} gets ({HOT_SHARE} of the nodes' {} client gets) (goal < {:.0} %: {}); another 1/{nodes} of its gets came to the owner straight from the clients, local hits there",
            s.served,
            100.0 * s.share(),
            s.hot_gets,
            s.gets,
            100.0 * SHARE_GOAL,
            met(s.share() < SHARE_GOAL)
        ),
        None => "the owner's share after detection is unknown: the key was never detected"
            .to_owned(),
    });
    o.notes.push(format!(
        "over the whole hot run: {} gets answered from hot copies, {} values fetched flagged hot, {} peer gets served, {} gets joined a peer call in flight",
        o.delta("hot_hits"),
        o.delta("hot_flagged"),
        o.delta("served_to_peers"),
        o.delta("loads_deduped")
    ));
    o.extra = json!({
        "hot_key": key, "owner": owner, "hot_share": HOT_SHARE,
        "uniform_qps": base, "uniform_qps_runs": [first, last],
        "uniform_p99_ms": uniform[0].summary.latency_ms.p99.max(uniform[1].summary.latency_ms.p99),
        "hotspot_qps": ours, "qps_ratio": ratio,
        "detected_after_s": detected,
        "owner_peer_gets_after_detection": share.map(|s| s.served),
        "hot_gets_after_detection": share.map(|s| s.hot_gets),
        "owner_share_after_detection": share.map(OwnerShare::share),
        "goals": { "qps_ratio": QPS_GOAL, "owner_share": SHARE_GOAL, "detection_s": DETECT_GOAL_S },
    });
}

/// When the hot key was first listed at its owner, and the counters then.
struct Detected {
    after: Duration,
    counts: Counts,
}

/// Reads the owner's `/v1/hotkeys` every [`POLL`] from `begun` until `until` or until
/// it lists `key`, and then the counters.
async fn detect(
    ctx: &Ctx,
    c: &Cluster,
    owner: usize,
    key: &str,
    begun: Instant,
    until: Instant,
) -> anyhow::Result<Option<Detected>> {
    let url = format!("{}/v1/hotkeys", c.nodes[owner].url);
    let mut tick = tokio::time::interval_at(begun, POLL);
    while tick.tick().await < until {
        let listed = get_json(&ctx.http, &url).await?;
        let hot = (listed["groups"][GROUP].as_array()).context("no group in /v1/hotkeys")?;
        if hot.iter().any(|k| k["key"] == key) {
            let after = begun.elapsed();
            let counts = Counts::read(ctx, c, owner).await?;
            return Ok(Some(Detected { after, counts }));
        }
    }
    Ok(None)
}

/// The counters of all nodes and of the hot key's owner at one moment.
struct Counts {
    all: Tally,
    owner: Tally,
}

impl Counts {
    async fn read(ctx: &Ctx, c: &Cluster, owner: usize) -> anyhow::Result<Counts> {
        Ok(Counts {
            all: c.tally(ctx, 0..c.nodes.len()).await?,
            owner: c.tally(ctx, owner..owner + 1).await?,
        })
    }
}

/// The gets the owner answered for its peers between two moments, against the hot key's
/// gets meanwhile.
struct OwnerShare {
    /// Peer gets the owner answered: only the hot key's, as the others go to their
    /// owners.
    served: u64,
    /// Client gets of all nodes.
    gets: u64,
    /// The hot key's part of them.
    hot_gets: f64,
}

impl OwnerShare {
    fn between(from: &Counts, to: &Counts) -> OwnerShare {
        let grew = |a: &Tally, b: &Tally, counter: &str| {
            let read = |t: &Tally| t.counters.get(counter).copied().unwrap_or(0);
            read(b).saturating_sub(read(a))
        };
        let gets = grew(&from.all, &to.all, "gets");
        OwnerShare {
            served: grew(&from.owner, &to.owner, "served_to_peers"),
            gets,
            hot_gets: gets as f64 * HOT_SHARE,
        }
    }

    fn share(&self) -> f64 {
        self.served as f64 / self.hot_gets.max(1.0)
    }
}
