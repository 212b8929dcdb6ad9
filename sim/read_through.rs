//! One node and the `db` host: read-through, a partitioned and a held source, expiry.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use peercache::{Error, Group};

use crate::harness::BoxError;
use crate::harness::db::{self, DB_HOST, DbConfig, DbLoader, value_of};
use crate::harness::group::{GROUP, GroupSpec};
use crate::harness::node::host_name;
use crate::harness::world::{World, now, run_client};
use crate::replayed;

/// Each load gives up after this long, so a partition turns into an error, not a hang.
const LOAD_TIMEOUT: Duration = Duration::from_secs(1);
const TTL: Duration = Duration::from_secs(300);

/// What the node saw: (simulated ms, operation, outcome).
type Trace = Vec<(u128, String, String)>;

/// One run: warm 20 keys, read them again, lose the db, get it back, let TTLs lapse.
fn run(seed: u64) -> (Trace, BTreeMap<String, u64>) {
    let mut sim = World {
        duration: Duration::from_secs(600),
        ..World::new(seed)
    }
    .build();
    let source = db::add_db(&mut sim, DbConfig::default(), seed);
    let trace = run_client(sim, &host_name(0), play(seed));
    let mut counts = BTreeMap::<String, u64>::new();
    for load in source.lock().unwrap().take_loads() {
        *counts.entry(load.key).or_default() += 1;
    }
    (trace, counts)
}

/// The client host plays the node: a registry with the group, without a server.
async fn play(seed: u64) -> Result<Trace, BoxError> {
    let spec = GroupSpec {
        ttl: Some((TTL, 0.1)),
        ..GroupSpec::new(DbLoader {
            timeout: LOAD_TIMEOUT,
        })
    };
    let registry = spec.registry(seed)?;
    let sweeper = tokio::spawn({
        let registry = registry.clone();
        async move { registry.run_sweeper(Duration::from_secs(10)).await }
    });
    let node = Reader {
        group: registry.get(GROUP)?,
        trace: RefCell::default(),
    };
    for round in 0..2 {
        for i in 0..20 {
            let key = format!("u{i}");
            assert_eq!(node.get(&key).await?, value_of(&key, 0, 0), "round {round}");
        }
    }
    assert_eq!(node.group.stats().loads, 20, "second round is all hits");
    lose_the_db(&node).await?;

    // Past the longest TTL, the sweeper has dropped every entry without any reads.
    tokio::time::sleep(TTL + Duration::from_secs(20)).await;
    let s = node.group.stats();
    assert_eq!((s.store.items, s.store.bytes), (0, 0));
    assert_eq!(s.store.expirations, 21);
    assert_eq!(s.local_load_errors, 2);
    assert_eq!(node.get("u0").await?, value_of("u0", 0, 0));
    sweeper.abort();
    Ok(node.trace.into_inner())
}

/// The db partitioned away, then held: loads fail, cached keys are still served, and
/// errors are not cached.
async fn lose_the_db(node: &Reader) -> Result<(), BoxError> {
    let host = host_name(0);
    // Partitioned: the connection is refused at once.
    turmoil::partition(host.as_str(), DB_HOST);
    let err = node.get("u-new").await.expect_err("db unreachable");
    assert!(
        matches!(err, Error::Load(ref m) if m.contains("ConnectionRefused")),
        "{err}"
    );
    assert_eq!(
        node.get("u0").await?,
        value_of("u0", 0, 0),
        "cached keys still served"
    );
    turmoil::repair(host.as_str(), DB_HOST);
    // Held: messages queue, the load gives up after its timeout.
    turmoil::hold(host.as_str(), DB_HOST);
    let started = tokio::time::Instant::now();
    let err = node.get("u-new").await.expect_err("db held");
    assert!(
        matches!(err, Error::Load(ref m) if m.contains("timed out")),
        "{err}"
    );
    assert_eq!(started.elapsed(), LOAD_TIMEOUT);
    turmoil::release(host.as_str(), DB_HOST);
    assert_eq!(
        node.get("u-new").await?,
        value_of("u-new", 0, 0),
        "errors were not cached"
    );
    Ok(())
}

/// The group, and every Get on it.
struct Reader {
    group: Group,
    trace: RefCell<Trace>,
}

impl Reader {
    async fn get(&self, key: &str) -> peercache::Result<Bytes> {
        let r = self.group.get(key).await;
        let outcome = match &r {
            Ok(v) => String::from_utf8_lossy(v).into_owned(),
            Err(e) => format!("error: {e}"),
        };
        let at = now().as_millis();
        self.trace
            .borrow_mut()
            .push((at, format!("get {key}"), outcome));
        r
    }
}

#[test]
fn read_through_over_the_simulated_network() {
    let test = "read_through::read_through_over_the_simulated_network";
    replayed(test, run, |seed, (trace, counts)| {
        // u0..u19 once, u-new once (the partitioned attempt never reached the db), u0 again
        // after expiry.
        assert_eq!(counts.len(), 21);
        assert_eq!(counts["u0"], 2);
        assert!(
            counts
                .iter()
                .filter(|(k, _)| *k != "u0")
                .all(|(_, &n)| n == 1),
            "{counts:?}"
        );
        assert_eq!(trace.len(), 45);
        println!("sim: scenario=read_through seed={seed} ops={}", trace.len());
    });
}
