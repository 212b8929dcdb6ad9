//! The staleness bound of DESIGN.md ("The request path and its promises"): after an
//! acknowledged Set, a non-owner's hot copy that missed the owner's invalidation is
//! served for at most the hot-copy TTL; after that the node asks the owner again, or,
//! if the owner is unreachable, loads from the source itself.
//!
//! Three real `Node`s (`nodeA`..`nodeC`) keep every copy fetched from an owner
//! (`fill_ratio` 1.0). The loader reads a shared `db` map, which models the source; the
//! client follows cache-aside (update the db, then PUT). `nodeC` keeps a hot copy of a
//! key `nodeA` owns, then `nodeA` and `nodeC` are partitioned, so `nodeA`'s invalidation
//! after the write through `nodeB` is lost.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use peercache::{Error, HotConfig, LoaderFn, Registry};
use serde_json::Value;

use super::cluster::{BoxError, advertise, http, ring_of, serve_node, wait_healthy};
use super::{Replay, seed};

const NODES: [&str; 3] = ["nodeA", "nodeB", "nodeC"];
const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
/// Longest a hot copy lives: the staleness bound under test.
const HOT_TTL: Duration = Duration::from_secs(5);
/// Longest a value loaded while the owner was unreachable lives.
const FALLBACK_TTL: Duration = Duration::from_secs(1);
/// Slack for message latency and the 5 ms tick on top of the bound.
const MARGIN: Duration = Duration::from_millis(250);
/// How often the client reads through `nodeC` while it may be stale.
const POLL: Duration = Duration::from_millis(50);
/// How long the client keeps reading through `nodeC` past the bound.
const AFTER: Duration = Duration::from_secs(3);

/// The source of truth: key -> current value. Writers update it before calling Set.
type Db = Arc<Mutex<BTreeMap<String, String>>>;

/// One exchange: (start ms, end ms, request, status, body), in simulated time.
type Trace = Vec<(u128, u128, String, u16, String)>;

fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// One node host: the real `Node` over `SimNet`, one group `g` keeping every copy it
/// fetches for `HOT_TTL`, loading from `db` and counting its loads.
fn node_host(
    i: usize,
    seed: u64,
    db: Db,
    loads: Arc<AtomicU64>,
) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = turmoil::Result>>> {
    move || {
        let (db, loads) = (db.clone(), loads.clone());
        Box::pin(async move {
            let registry = Registry::with_seed(seed ^ i as u64);
            registry
                .group("g")
                .capacity(4 << 20)
                .hot(HotConfig {
                    ttl: HOT_TTL,
                    fallback_ttl: FALLBACK_TTL,
                    fill_ratio: 1.0,
                    ..HotConfig::default()
                })
                .timeout(Duration::from_secs(5))
                .loader(LoaderFn(move |key: String| {
                    loads.fetch_add(1, Ordering::Relaxed);
                    let value = db.lock().unwrap().get(&key).cloned();
                    async move { value.map(Bytes::from).ok_or(Error::NotFound(key)) }
                }))
                .build()?;
            serve_node(&NODES, i, registry).await
        })
    }
}

/// What the client measured, in simulated ms.
#[derive(Debug, Default, Clone, PartialEq)]
struct Window {
    /// When `nodeC` finished filling its hot copy of the old value.
    filled: u128,
    /// When the PUT of the new value was acknowledged.
    written: u128,
    /// End of the last read through `nodeC` that returned the old value after the write.
    last_old: Option<u128>,
    /// Start and end of the first read through `nodeC` that returned the new value.
    first_new: Option<(u128, u128)>,
    /// `nodeA`'s `invalidations_failed` once the window closed.
    invalidations_failed: u64,
    /// `nodeC`'s loader calls by then: it loads itself while `nodeA` is unreachable.
    c_loads: u64,
}

/// The client host's scenario, recording each exchange into `trace`.
async fn drive(db: Db, trace: Arc<Mutex<Trace>>) -> Result<Window, BoxError> {
    let call = |i: usize, method: Method, path: String, body: String| {
        let trace = trace.clone();
        async move {
            let host = NODES[i];
            let start = now().as_millis();
            let (status, got) = http(host, method.clone(), &path, &body).await?;
            let text = String::from_utf8_lossy(&got).into_owned();
            trace.lock().unwrap().push((
                start,
                now().as_millis(),
                format!("{method} {host}{path}"),
                status.as_u16(),
                text.clone(),
            ));
            Result::<_, BoxError>::Ok((status, text))
        }
    };
    let stats = |i: usize| {
        let call = &call;
        async move {
            let (status, body) = call(i, Method::GET, "/v1/stats".into(), String::new()).await?;
            assert_eq!(status, StatusCode::OK, "stats of {}", NODES[i]);
            let json: Value = serde_json::from_str(&body)?;
            Result::<_, BoxError>::Ok(json["groups"]["g"].clone())
        }
    };
    let counter = |s: &Value, name: &str| s[name].as_u64().expect(name);

    wait_healthy(&NODES).await;
    // A key that nodeA owns, in the ring every node builds from the static list.
    let ring = ring_of(&NODES);
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| ring.owner(k).expect("non-empty ring").id == advertise(NODES[A]))
        .expect("nodeA owns some key");
    let path = format!("/v1/groups/g/keys/{key}");
    let get = |i: usize| call(i, Method::GET, path.clone(), String::new());
    let (old, new) = (format!("old:{key}"), format!("new:{key}"));
    db.lock().unwrap().insert(key.clone(), old.clone());

    // nodeC and nodeB fetch the key from nodeA and keep hot copies of it.
    let ok = |v: &str| (StatusCode::OK, v.to_owned());
    assert_eq!(get(C).await?, ok(&old), "first read via nodeC");
    let filled = now().as_millis();
    assert_eq!(get(B).await?, ok(&old), "first read via nodeB");
    assert_eq!(get(C).await?, ok(&old), "second read via nodeC");
    let c = stats(C).await?;
    assert_eq!(counter(&c, "peer_loads"), 1, "nodeC fetched once: {c}");
    assert_eq!(counter(&c, "hot_hits"), 1, "then hit its hot copy: {c}");
    assert_eq!(counter(&c, "hot_items"), 1, "{c}");

    // nodeA can no longer reach nodeC (nor the reverse); the write goes through nodeB.
    turmoil::partition(NODES[A], NODES[C]);
    db.lock().unwrap().insert(key.clone(), new.clone());
    let (status, body) = call(B, Method::PUT, path.clone(), new.clone()).await?;
    assert_eq!(status, StatusCode::OK, "PUT via nodeB: {body}");
    let written = now().as_millis();
    assert_eq!(get(B).await?, ok(&new), "the writer reads its write");
    assert_eq!(get(A).await?, ok(&new), "the owner holds the write");

    // nodeC may serve its old copy, but only until the hot TTL has run out.
    let bound = written + (HOT_TTL + MARGIN).as_millis();
    let until = bound + AFTER.as_millis();
    let mut window = Window {
        filled,
        written,
        ..Window::default()
    };
    loop {
        let start = now().as_millis();
        if start > until {
            break;
        }
        let (status, body) = get(C).await?;
        let end = now().as_millis();
        assert_eq!(
            status,
            StatusCode::OK,
            "read via nodeC at {start} ms: {body}"
        );
        if body == old {
            assert!(
                window.first_new.is_none(),
                "nodeC went back to the old value at {start} ms: {window:?}"
            );
            window.last_old = Some(end);
        } else {
            assert_eq!(body, new, "read via nodeC at {start} ms");
            window.first_new.get_or_insert((start, end));
        }
        assert!(
            start <= bound || body == new,
            "nodeC still stale at {start} ms, past the bound ({bound} ms): {window:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    let last_old = window
        .last_old
        .expect("the lost invalidation left nodeC stale");
    // The copy was kept before `filled`; the last stale answer left nodeC before the
    // copy expired and then travelled back to the client.
    assert!(
        last_old <= filled + (HOT_TTL + MARGIN).as_millis(),
        "stale past the copy's own expiry: {window:?}"
    );
    let (first_new_start, first_new_end) = window.first_new.expect("nodeC caught up");
    assert!(first_new_end <= bound, "{window:?}");

    let a = stats(A).await?;
    window.invalidations_failed = counter(&a, "invalidations_failed");
    assert!(
        window.invalidations_failed >= 1,
        "nodeA counts its lost invalidation: {a}"
    );
    let b = stats(B).await?;
    assert_eq!(counter(&b, "invalidations_failed"), 0, "{b}");
    // Still cut off from nodeA, nodeC loaded the key itself and kept each such copy no
    // longer than the fallback TTL, so it reloaded at least once per period.
    let c = stats(C).await?;
    window.c_loads = counter(&c, "loads");
    assert!(counter(&c, "peer_errors") >= 1, "{c}");
    let periods = (until - first_new_start) / (FALLBACK_TTL + MARGIN).as_millis();
    assert!(
        u128::from(window.c_loads) >= periods.max(1),
        "{periods} fallback periods: {c}"
    );

    // Healed: nodeC asks nodeA again once its fallback copy is gone, and reads the new value.
    turmoil::repair(NODES[A], NODES[C]);
    tokio::time::sleep(FALLBACK_TTL + MARGIN).await;
    assert_eq!(get(C).await?, ok(&new), "via nodeC after the repair");
    Ok(window)
}

/// One run: the client's measurements and trace, and each node's loader calls.
fn run(seed: u64) -> (Window, Trace, Vec<u64>) {
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .tick_duration(Duration::from_millis(5))
        .simulation_duration(Duration::from_secs(60))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(20))
        .build();
    let db = Db::default();
    let loads: Vec<Arc<AtomicU64>> = NODES.iter().map(|_| Arc::default()).collect();
    for (i, host) in NODES.into_iter().enumerate() {
        sim.host(host, node_host(i, seed, db.clone(), loads[i].clone()));
    }
    let trace = Arc::new(Mutex::new(Trace::new()));
    let window = Arc::new(Mutex::new(None));
    let (out, measured) = (trace.clone(), window.clone());
    sim.client("client", async move {
        let w = drive(db, out)
            .await
            .map_err(|e| -> Box<dyn std::error::Error> { e })?;
        *measured.lock().unwrap() = Some(w);
        Ok(())
    });
    sim.run().expect("simulation succeeds");
    let window = window.lock().unwrap().take().expect("the client finished");
    let trace = std::mem::take(&mut *trace.lock().unwrap());
    (
        window,
        trace,
        loads.iter().map(|l| l.load(Ordering::Relaxed)).collect(),
    )
}

#[test]
fn a_lost_invalidation_is_stale_for_at_most_the_hot_ttl() {
    let seed = seed();
    let _replay = Replay {
        scenario: "staleness::a_lost_invalidation_is_stale_for_at_most_the_hot_ttl",
        seed,
    };
    let (window, trace, loads) = run(seed);
    let (again, trace_again, loads_again) = run(seed);
    assert_eq!(
        (&window, &trace, &loads),
        (&again, &trace_again, &loads_again),
        "SIM_SEED={seed} must replay identically"
    );
    let stale_ms = window.last_old.unwrap_or(window.written) - window.written;
    let (first_new_start, first_new_end) = window.first_new.unwrap_or_default();
    println!(
        "sim: scenario=staleness seed={seed} ops={} filled={}ms written={}ms \
         last_old={:?}ms first_new={first_new_start}..{first_new_end}ms \
         stale_after_write={stale_ms}ms bound={}ms invalidations_failed={} c_loads={} \
         loads={loads:?}",
        trace.len(),
        window.filled,
        window.written,
        window.last_old,
        HOT_TTL.as_millis(),
        window.invalidations_failed,
        window.c_loads,
    );
}
