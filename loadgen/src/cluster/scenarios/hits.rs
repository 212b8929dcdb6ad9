//! local-hit, local-hit-resp, remote-hit, remote-hit-hot: warmed keys, each get sent to
//! the owner (over HTTP or the Redis protocol) or to another node.

use crate::client::Route;
use crate::cluster::fixture::Ctx;
use crate::cluster::outcome::Outcome;
use crate::keys::{Mix, Workload};

/// local-hit-resp: local-hit's load through the Redis protocol (GET on each key's
/// owner), so the two front ends compare on one cluster shape.
pub async fn local_hit_resp(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let name = "local-hit-resp";
    let mut o = Outcome::new(
        name,
        "local-hit through the Redis protocol: warmed keys, each GET sent to the key's owner's RESP port",
    );
    let c = ctx.cluster(false, ctx.s.source_latency).await?;
    ctx.warm(c.urls(0..c.nodes.len()), ctx.s.keys, false)
        .await?;
    let cfg = ctx.config(name, Workload::Uniform, ctx.s.keys, Mix::GETS, Route::Owner);
    o.run = Some(c.measure_resp(ctx, &cfg, &mut o).await?);
    o.check("no errors", o.errors() == 0);
    o.check("no source loads: every key was warmed", o.source_loads == 0);
    o.check("no peer hops", o.peer_loads == 0);
    c.stop().await;
    Ok(o)
}

/// local-hit with [`Route::Owner`]; remote-hit with [`Route::Remote`], or remote-hit-hot
/// with `hot` copies on as well.
pub async fn hits(ctx: &mut Ctx, route: Route, hot: bool) -> anyhow::Result<Outcome> {
    let (name, about) = match (route, hot) {
        (Route::Owner, _) => (
            "local-hit",
            "warmed keys, each get sent to the key's owner: a local hit every time",
        ),
        (_, false) => (
            "remote-hit",
            "warmed keys, each get sent to a node that does not own the key; hot copies off, so every get is a peer hop",
        ),
        (_, true) => (
            "remote-hit-hot",
            "as remote-hit with hot copies on: a value fetched twice from its owner is kept for 10 s, and the warm-up fetched every key twice through every node",
        ),
    };
    let mut o = Outcome::new(name, about);
    let c = ctx.cluster(hot, ctx.s.source_latency).await?;
    let urls = c.urls(0..c.nodes.len());
    ctx.warm(urls.clone(), ctx.s.keys, hot).await?;
    let cfg = ctx.config(name, Workload::Uniform, ctx.s.keys, Mix::GETS, route);
    let report = c.measure(ctx, &cfg, &mut o).await?;
    o.run = Some(report);
    o.check("no errors", o.errors() == 0);
    o.check("no source loads: every key was warmed", o.source_loads == 0);
    let gets = o.delta("gets");
    match (route, hot) {
        (Route::Owner, _) => o.check("no peer hops", o.peer_loads == 0),
        (_, false) => {
            // Concurrent gets of one key on one node share one peer call.
            let joined = o.delta("loads_deduped");
            o.notes.push(format!(
                "{gets} gets: {} peer calls, {joined} joined a call in flight",
                o.peer_loads
            ));
            o.check(
                "every get is a peer call or joins one",
                o.peer_loads + joined == gets,
            );
        }
        (_, true) => {
            let hot_hits = o.delta("hot_hits");
            o.notes.push(format!(
                "{hot_hits} of {gets} gets were answered from hot copies, {} went to the owner",
                o.peer_loads
            ));
            o.check("most gets are hot hits", hot_hits * 2 > gets);
        }
    }
    c.stop().await;
    Ok(o)
}
