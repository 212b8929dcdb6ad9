//! The staleness bound of DESIGN.md ("The request path and its promises"): after an
//! acknowledged Set, a non-owner's hot copy that missed the owner's invalidation is
//! served for at most the hot-copy TTL; after that the node asks the owner again, or,
//! if the owner is unreachable, the member that would own the key without it, which
//! asks the owner on its behalf when it can reach it.
//!
//! Three real `Node`s, A, B and C (`node0`..`node2`), keep every copy fetched from an
//! owner (`fill_ratio` 1.0). The loader reads a shared `db` map, which models the source;
//! the client follows cache-aside (update the db, then PUT). C keeps a hot copy of a key
//! A owns, then A and C are partitioned, so A's invalidation after the write through B
//! is lost.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use peercache::{Error, HotConfig, LoaderFn};

use super::replayed;
use crate::harness::BoxError;
use crate::harness::group::GroupSpec;
use crate::harness::http::{Exchange, Recorder, counter, key_path, wait_healthy};
use crate::harness::node::{NodeSpec, Peers, advertise, host_name, static_ring};
use crate::harness::world::{World, now};

const NODES: usize = 3;
/// The key's owner.
const A: usize = 0;
/// The writer.
const B: usize = 1;
/// The node whose invalidation is lost.
const C: usize = 2;
/// Longest a hot copy lives: the staleness bound under test.
const HOT_TTL: Duration = Duration::from_secs(5);
/// Longest a value loaded while the owner was unreachable lives.
const FALLBACK_TTL: Duration = Duration::from_secs(1);
/// Slack for message latency and the 5 ms tick on top of the bound.
const MARGIN: Duration = Duration::from_millis(250);
/// How often the client reads through C while it may be stale.
const POLL: Duration = Duration::from_millis(50);
/// How long the client keeps reading through C past the bound.
const AFTER: Duration = Duration::from_secs(3);

/// The source of truth: key -> current value. Writers update it before calling Set.
type Db = Arc<Mutex<BTreeMap<String, String>>>;

/// Node `i`: one group keeping every copy it fetches for `HOT_TTL`, loading from `db`
/// and counting its loads.
fn node(i: usize, seed: u64, db: Db, loads: Arc<AtomicU64>) -> NodeSpec {
    let loader = LoaderFn(move |key: String| {
        loads.fetch_add(1, Ordering::Relaxed);
        let value = db.lock().unwrap().get(&key).cloned();
        async move { value.map(Bytes::from).ok_or(Error::NotFound(key)) }
    });
    let group = GroupSpec {
        capacity: Some(4 << 20),
        hot: Some(HotConfig {
            ttl: HOT_TTL,
            fallback_ttl: FALLBACK_TTL,
            fill_ratio: 1.0,
            ..HotConfig::default()
        }),
        timeout: Some(Duration::from_secs(5)),
        ..GroupSpec::new(loader)
    };
    NodeSpec::new(i, seed, group, Peers::Static(NODES))
}

/// What the client measured, in simulated ms.
#[derive(Debug, Default, Clone, PartialEq)]
struct Window {
    /// When C finished filling its hot copy of the old value.
    filled: u128,
    /// When the PUT of the new value was acknowledged.
    written: u128,
    /// End of the last read through C that returned the old value after the write.
    last_old: Option<u128>,
    /// Start and end of the first read through C that returned the new value.
    first_new: Option<(u128, u128)>,
    /// A's `invalidations_failed` once the window closed.
    invalidations_failed: u64,
    /// C's loader calls by then: it loads itself while A is unreachable.
    c_loads: u64,
}

/// The client host's scenario.
async fn drive(db: Db, client: Recorder) -> Result<Window, BoxError> {
    wait_healthy(NODES).await;
    // A key that A owns, in the ring every node builds from the static list, and B
    // would own without A.
    let ring = static_ring(NODES);
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| {
            let next = ring.successors(k, 2);
            next[0].id == advertise(A) && next[1].id == advertise(B)
        })
        .expect("A owns some key");
    let get = |i: usize| client.get(i, &key);
    let (old, new) = (format!("old:{key}"), format!("new:{key}"));
    db.lock().unwrap().insert(key.clone(), old.clone());

    // C and B fetch the key from A and keep hot copies of it.
    let ok = |v: &str| (StatusCode::OK, v.to_owned());
    assert_eq!(get(C).await?, ok(&old), "first read via C");
    let filled = now().as_millis();
    assert_eq!(get(B).await?, ok(&old), "first read via B");
    assert_eq!(get(C).await?, ok(&old), "second read via C");
    let c = client.stats(C).await?;
    assert_eq!(counter(&c, "peer_loads"), 1, "C fetched once: {c}");
    assert_eq!(counter(&c, "hot_hits"), 1, "then hit its hot copy: {c}");
    assert_eq!(counter(&c, "hot_items"), 1, "{c}");

    // A can no longer reach C (nor the reverse); the write goes through B.
    turmoil::partition(host_name(A), host_name(C));
    db.lock().unwrap().insert(key.clone(), new.clone());
    let (status, body) = client.call(B, Method::PUT, &key_path(&key), &new).await?;
    assert_eq!(status, StatusCode::OK, "PUT via B: {body}");
    let written = now().as_millis();
    assert_eq!(get(B).await?, ok(&new), "the writer reads its write");
    assert_eq!(get(A).await?, ok(&new), "the owner holds the write");

    // C may serve its old copy, but only until the hot TTL has run out.
    let bound = written + (HOT_TTL + MARGIN).as_millis();
    let until = bound + AFTER.as_millis();
    let mut window = Window {
        filled,
        written,
        ..Window::default()
    };
    poll_c(&client, &key, (&old, &new), &mut window, (bound, until)).await?;
    let last_old = window.last_old.expect("the lost invalidation left C stale");
    // The copy was kept before `filled`; the last stale answer left C before the
    // copy expired and then travelled back to the client.
    assert!(
        last_old <= filled + (HOT_TTL + MARGIN).as_millis(),
        "stale past the copy's own expiry: {window:?}"
    );
    let (_, first_new_end) = window.first_new.expect("C caught up");
    assert!(first_new_end <= bound, "{window:?}");

    let a = client.stats(A).await?;
    window.invalidations_failed = counter(&a, "invalidations_failed");
    assert!(
        window.invalidations_failed >= 1,
        "A counts its lost invalidation: {a}"
    );
    let b = client.stats(B).await?;
    assert_eq!(counter(&b, "invalidations_failed"), 0, "{b}");
    // Still cut off from A, C suspects A: it asks B, the member that would own the key
    // without A, which reaches A and asks it for C. Nothing is loaded; the staleness
    // bound above is unchanged.
    let c = client.stats(C).await?;
    window.c_loads = counter(&c, "loads");
    assert!(counter(&c, "peer_errors") >= 1, "{c}");
    assert!(counter(&c, "failover_gets") >= 1, "{c}");
    assert_eq!(window.c_loads, 0, "{c}");
    let b = client.stats(B).await?;
    assert!(counter(&b, "relayed_gets") >= 1, "{b}");
    assert_eq!(counter(&b, "loads"), 0, "{b}");
    let fetched = counter(&c, "peer_loads");

    // Healed: once its copy is gone, C probes A, which answers; C reads from A again.
    turmoil::repair(host_name(A), host_name(C));
    tokio::time::sleep(HOT_TTL + MARGIN).await;
    assert_eq!(get(C).await?, ok(&new), "via C after the repair");
    let c = client.stats(C).await?;
    assert_eq!(
        counter(&c, "peer_loads"),
        fetched + 1,
        "C asked A again after the repair: {c}"
    );
    Ok(window)
}

/// Reads through C every `POLL` until `until`, recording the answers in `window`: C may
/// answer the old value only up to `bound`, and never again once it answered the new.
async fn poll_c(
    client: &Recorder,
    key: &str,
    (old, new): (&str, &str),
    window: &mut Window,
    (bound, until): (u128, u128),
) -> Result<(), BoxError> {
    loop {
        let start = now().as_millis();
        if start > until {
            break;
        }
        let (status, body) = client.get(C, key).await?;
        let end = now().as_millis();
        assert_eq!(status, StatusCode::OK, "read via C at {start} ms: {body}");
        if body == old {
            assert!(
                window.first_new.is_none(),
                "C went back to the old value at {start} ms: {window:?}"
            );
            window.last_old = Some(end);
        } else {
            assert_eq!(body, new, "read via C at {start} ms");
            window.first_new.get_or_insert((start, end));
        }
        assert!(
            start <= bound || body == new,
            "C still stale at {start} ms, past the bound ({bound} ms): {window:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// One run: the client's measurements and exchanges, and each node's loader calls.
fn run(seed: u64) -> (Window, Vec<Exchange>, Vec<u64>) {
    let db = Db::default();
    let loads: Vec<Arc<AtomicU64>> = (0..NODES).map(|_| Arc::default()).collect();
    let nodes = (0..NODES).map(|i| node(i, seed, db.clone(), loads[i].clone()));
    let world = World::new(seed);
    let (window, trace) = world.run_nodes_and_client(nodes, |client| drive(db.clone(), client));
    (
        window,
        trace,
        loads.iter().map(|l| l.load(Ordering::Relaxed)).collect(),
    )
}

#[test]
fn a_lost_invalidation_is_stale_for_at_most_the_hot_ttl() {
    let test = "staleness::a_lost_invalidation_is_stale_for_at_most_the_hot_ttl";
    replayed(test, run, |seed, (window, trace, loads)| {
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
    });
}
