//! One node and the `db` host: read-through, a partitioned and a held source, expiry.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peercache::{Error, Registry, TokioClock};

use crate::harness::db::{self, DbConfig, DbLoader, value_of};
use crate::{Replay, seed};

/// Each load gives up after this long, so a partition turns into an error, not a hang.
const LOAD_TIMEOUT: Duration = Duration::from_secs(1);
const TTL: Duration = Duration::from_secs(300);

/// What the node saw: (simulated ms, operation, outcome).
type Trace = Vec<(u128, String, String)>;

/// One run: warm 20 keys, read them again, lose the db, get it back, let TTLs lapse.
fn run(seed: u64) -> (Trace, BTreeMap<String, u64>) {
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .tick_duration(Duration::from_millis(5))
        .simulation_duration(Duration::from_secs(600))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(20))
        .build();
    let source = db::add_db(&mut sim, DbConfig::default(), seed);
    let trace = Arc::new(Mutex::new(Trace::new()));
    let out = trace.clone();
    sim.client("node", async move {
        let clock = TokioClock::new();
        let registry = Registry::with_seed(Arc::new(clock), seed);
        let group = registry
            .group("users")
            .ttl(TTL)
            .ttl_jitter(0.1)
            .loader(DbLoader {
                timeout: LOAD_TIMEOUT,
            })
            .build()?;
        let sweeper = tokio::spawn({
            let registry = registry.clone();
            async move { registry.run_sweeper(Duration::from_secs(10)).await }
        });
        let record = |op: String, outcome: String| {
            let at = turmoil::sim_elapsed().unwrap_or_default().as_millis();
            out.lock().unwrap().push((at, op, outcome));
        };
        let get = |key: String| {
            let group = group.clone();
            async move {
                let r = group.get(&key).await;
                let outcome = match &r {
                    Ok(v) => String::from_utf8_lossy(v).into_owned(),
                    Err(e) => format!("error: {e}"),
                };
                record(format!("get {key}"), outcome);
                r
            }
        };
        for round in 0..2 {
            for i in 0..20 {
                let key = format!("u{i}");
                assert_eq!(
                    get(key.clone()).await?,
                    value_of(&key, 0, 0),
                    "round {round}"
                );
            }
        }
        assert_eq!(group.stats().loads, 20, "second round is all hits");

        // Partitioned: the connection is refused at once.
        turmoil::partition("node", "db");
        let err = get("u-new".into()).await.expect_err("db unreachable");
        assert!(
            matches!(err, Error::Load(ref m) if m.contains("ConnectionRefused")),
            "{err}"
        );
        assert_eq!(
            get("u0".into()).await?,
            value_of("u0", 0, 0),
            "cached keys still served"
        );
        turmoil::repair("node", "db");
        // Held: messages queue, the load gives up after its timeout.
        turmoil::hold("node", "db");
        let started = tokio::time::Instant::now();
        let err = get("u-new".into()).await.expect_err("db held");
        assert!(
            matches!(err, Error::Load(ref m) if m.contains("timed out")),
            "{err}"
        );
        assert_eq!(started.elapsed(), LOAD_TIMEOUT);
        turmoil::release("node", "db");
        assert_eq!(
            get("u-new".into()).await?,
            value_of("u-new", 0, 0),
            "errors were not cached"
        );

        // Past the longest TTL, the sweeper has dropped every entry without any reads.
        tokio::time::sleep(TTL + Duration::from_secs(20)).await;
        let s = group.stats();
        assert_eq!((s.store.items, s.store.bytes), (0, 0));
        assert_eq!(s.store.expirations, 21);
        assert_eq!(s.local_load_errors, 2);
        assert_eq!(get("u0".into()).await?, value_of("u0", 0, 0));
        sweeper.abort();
        Ok(())
    });
    sim.run().expect("simulation succeeds");
    let trace = std::mem::take(&mut *trace.lock().unwrap());
    let mut counts = BTreeMap::<String, u64>::new();
    for load in source.lock().unwrap().take_loads() {
        *counts.entry(load.key).or_default() += 1;
    }
    (trace, counts)
}

#[test]
fn read_through_over_the_simulated_network() {
    let seed = seed();
    let _replay = Replay {
        scenario: "read_through_over_the_simulated_network",
        seed,
    };
    let (trace, counts) = run(seed);
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
    let (again, _) = run(seed);
    assert_eq!(trace, again, "SIM_SEED={seed} must replay identically");
    println!("sim: scenario=read_through seed={seed} ops={}", trace.len());
}
