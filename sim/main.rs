//! Simulated scenarios (turmoil): `cargo test --features sim`.
//!
//! The node code runs unchanged on simulated hosts: time is turmoil's (through the
//! `TokioClock` seam), and the source is a `db` host reached over the simulated network.
//! `SIM_SEED=<n>` picks the seed; the same seed replays the same run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use peercache::{Error, Loader, Registry, Result, TokioClock};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use turmoil::net::{TcpListener, TcpStream};

mod cluster;
mod registry;
mod staleness;

const DB_PORT: u16 = 9000;
/// Each load gives up after this long, so a partition turns into an error, not a hang.
const LOAD_TIMEOUT: Duration = Duration::from_secs(1);
const TTL: Duration = Duration::from_secs(300);

/// Loads per key, as counted by the db host.
type LoadCounts = Arc<Mutex<BTreeMap<String, u64>>>;

fn seed() -> u64 {
    std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// The source: answers `key\n` with `value-of-<key>\n` and counts each load.
async fn db(counts: LoadCounts) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind(("0.0.0.0", DB_PORT)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let counts = counts.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut lines = BufReader::new(rd).lines();
            while let Ok(Some(key)) = lines.next_line().await {
                *counts.lock().unwrap().entry(key.clone()).or_default() += 1;
                if wr
                    .write_all(format!("value-of-{key}\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
    }
}

/// A loader that asks the db host over the simulated network.
struct DbLoader;

#[async_trait::async_trait]
impl Loader for DbLoader {
    async fn load(&self, key: &str) -> Result<Bytes> {
        let ask = async {
            let mut stream = TcpStream::connect(("db", DB_PORT)).await?;
            stream.write_all(format!("{key}\n").as_bytes()).await?;
            let mut line = String::new();
            BufReader::new(stream).read_line(&mut line).await?;
            std::io::Result::Ok(Bytes::from(line.trim_end().to_owned()))
        };
        match tokio::time::timeout(LOAD_TIMEOUT, ask).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Error::load(format!("db: {:?}: {e}", e.kind()))),
            Err(_) => Err(Error::load("db: timed out")),
        }
    }
}

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
    let counts = LoadCounts::default();
    let db_counts = counts.clone();
    sim.host("db", move || db(db_counts.clone()));
    let trace = Arc::new(Mutex::new(Trace::new()));
    let out = trace.clone();
    sim.client("node", async move {
        let clock = TokioClock::new();
        let registry = Registry::with_seed(Arc::new(clock), seed);
        let group = registry
            .group("users")
            .ttl(TTL)
            .ttl_jitter(0.1)
            .loader(DbLoader)
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
                    format!("value-of-{key}"),
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
            "value-of-u0",
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
            "value-of-u-new",
            "errors were not cached"
        );

        // Past the longest TTL, the sweeper has dropped every entry without any reads.
        tokio::time::sleep(TTL + Duration::from_secs(20)).await;
        let s = group.stats();
        assert_eq!((s.store.items, s.store.bytes), (0, 0));
        assert_eq!(s.store.expirations, 21);
        assert_eq!(s.local_load_errors, 2);
        assert_eq!(get("u0".into()).await?, "value-of-u0");
        sweeper.abort();
        Ok(())
    });
    sim.run().expect("simulation succeeds");
    let trace = std::mem::take(&mut *trace.lock().unwrap());
    let counts = counts.lock().unwrap().clone();
    (trace, counts)
}

/// Prints the command that replays a failing scenario, when dropped during a panic.
struct Replay {
    scenario: &'static str,
    seed: u64,
}

impl Drop for Replay {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "sim: scenario={} seed={} FAILED; replay: SIM_SEED={} cargo test --features sim --test sim {}",
                self.scenario, self.seed, self.seed, self.scenario
            );
        }
    }
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
