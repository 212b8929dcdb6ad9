//! The `db` host: the source of truth. Each key has a version (0 until written); its value
//! is a pure function of (key, version). Writers bump the version before they tell the
//! cache (cache-aside). Every load is recorded with the version it returned.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use peercache::{Error, Loader, Result};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use turmoil::net::{TcpListener, TcpStream};

use super::world::now;
use crate::history::Load;

pub const DB_HOST: &str = "db";
pub const DB_PORT: u16 = 9000;

/// The source's value of `key` at `version`, padded to `size` bytes. The key and the
/// version are spelled out first, so a checker can tell exactly what a Get returned.
pub fn value_of(key: &str, version: u64, size: usize) -> Bytes {
    let mut v = format!("{key}@{version}#").into_bytes();
    let fill = xxhash_rust::xxh3::xxh3_64(&v);
    let mut i = 0;
    while v.len() < size {
        v.push(b'a' + ((fill >> (i % 60)) as u8 % 26));
        i += 1;
    }
    Bytes::from(v)
}

/// Reads back what [`value_of`] wrote: (key, version).
pub fn parse_value(value: &[u8]) -> Option<(&str, u64)> {
    let text = std::str::from_utf8(value).ok()?;
    let (head, _) = text.split_once('#')?;
    let (key, version) = head.rsplit_once('@')?;
    Some((key, version.parse().ok()?))
}

/// How the source behaves; by default it answers at once and never fails.
#[derive(Debug, Clone, Default)]
pub struct DbConfig {
    pub value_size: usize,
    pub latency: (Duration, Duration),
    /// Share of loads that fail.
    pub fail_rate: f64,
}

/// The source's state, shared by the db host and the writers.
#[derive(Debug)]
pub struct Db {
    config: DbConfig,
    versions: BTreeMap<String, u64>,
    loads: Vec<Load>,
    rng: SmallRng,
}

pub type SharedDb = Arc<Mutex<Db>>;

impl Db {
    fn new(config: DbConfig, seed: u64) -> SharedDb {
        Arc::new(Mutex::new(Db {
            config,
            versions: BTreeMap::new(),
            loads: Vec::new(),
            rng: SmallRng::seed_from_u64(seed),
        }))
    }

    /// A writer changes `key` in the source: its next version, now current.
    pub fn bump(&mut self, key: &str) -> u64 {
        let v = self.versions.entry(key.to_owned()).or_default();
        *v += 1;
        *v
    }

    pub fn value_size(&self) -> usize {
        self.config.value_size
    }

    pub fn take_loads(&mut self) -> Vec<Load> {
        std::mem::take(&mut self.loads)
    }
}

/// Adds the `db` host, serving a source that behaves as `config` says, its latencies
/// and failures drawn from `seed`; returns the source's state.
pub fn add_db(sim: &mut turmoil::Sim<'_>, config: DbConfig, seed: u64) -> SharedDb {
    let db = Db::new(config, seed);
    let served = db.clone();
    sim.host(DB_HOST, move || serve(served.clone()));
    db
}

/// Serves `key\n` with `OK <value>\n` (or `ERR …\n` for an injected failure).
async fn serve(db: SharedDb) -> turmoil::Result {
    let listener = TcpListener::bind(("0.0.0.0", DB_PORT)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let db = db.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut lines = BufReader::new(rd).lines();
            while let Ok(Some(key)) = lines.next_line().await {
                let asked = now();
                let delay = {
                    let mut db = db.lock().unwrap();
                    let (lo, hi) = db.config.latency;
                    if hi > lo {
                        db.rng.random_range(lo..=hi)
                    } else {
                        lo
                    }
                };
                tokio::time::sleep(delay).await;
                let reply = {
                    let mut db = db.lock().unwrap();
                    let version = db.versions.get(&key).copied().unwrap_or(0);
                    let fail_rate = db.config.fail_rate;
                    let ok = !(fail_rate > 0.0 && db.rng.random_bool(fail_rate));
                    db.loads.push(Load {
                        asked,
                        at: now(),
                        key: key.clone(),
                        version,
                        ok,
                    });
                    if ok {
                        let value = value_of(&key, version, db.config.value_size);
                        format!("OK {}\n", String::from_utf8_lossy(&value))
                    } else {
                        "ERR injected failure\n".to_owned()
                    }
                };
                if wr.write_all(reply.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// A node's loader: asks the db host over the simulated network, within `timeout`.
pub struct DbLoader {
    pub timeout: Duration,
}

#[async_trait::async_trait]
impl Loader for DbLoader {
    async fn load(&self, key: &str) -> Result<Bytes> {
        let ask = async {
            let mut stream = TcpStream::connect((DB_HOST, DB_PORT)).await?;
            stream.write_all(format!("{key}\n").as_bytes()).await?;
            let mut line = String::new();
            BufReader::new(stream).read_line(&mut line).await?;
            std::io::Result::Ok(line)
        };
        match tokio::time::timeout(self.timeout, ask).await {
            Ok(Ok(line)) => match line.trim_end().split_once(' ') {
                Some(("OK", value)) => Ok(Bytes::from(value.to_owned())),
                _ => Err(Error::load(format!("db: {}", line.trim_end()))),
            },
            Ok(Err(e)) => Err(Error::load(format!("db: {:?}: {e}", e.kind()))),
            Err(_) => Err(Error::load("db: timed out")),
        }
    }
}
