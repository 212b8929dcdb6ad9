//! `client<i>` hosts: workers that issue Gets, Sets and Removes over HTTP (or the Redis
//! protocol, when the swarm says so) to the nodes and record every operation. Writers follow cache-aside: the source first, then the
//! cache. Each key has exactly one writer, so writes to a key are serialized as
//! cache-aside requires.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

use super::db::{SharedDb, value_of};
use super::http::{call, key_path};
use super::node::host_name;
use super::resp;
use super::world::now;
use super::{BoxError, Swarm};
use crate::history::{Kind, Op, Outcome};

pub fn host_name_of(client: usize) -> String {
    format!("client{client}")
}

/// Runs every worker of client `c` until the workload ends.
pub async fn run(
    c: usize,
    swarm: Swarm,
    db: SharedDb,
    ops: Arc<Mutex<Vec<Op>>>,
) -> turmoil::Result {
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..swarm.workers {
        let worker = c * swarm.workers + w;
        workers.spawn(work(worker, swarm.clone(), db.clone(), ops.clone()));
    }
    while let Some(done) = workers.join_next().await {
        done?.map_err(|e| -> Box<dyn std::error::Error> { e })?;
    }
    Ok(())
}

async fn work(
    worker: usize,
    swarm: Swarm,
    db: SharedDb,
    ops: Arc<Mutex<Vec<Op>>>,
) -> Result<(), BoxError> {
    let mut rng = SmallRng::seed_from_u64(swarm.seed ^ 0x5157_0000 ^ worker as u64);
    let zipf = swarm
        .zipf
        .map(|s| Zipf::new(swarm.keys as f64, s).expect("valid zipf"));
    let writers = swarm.clients * swarm.workers;
    let start = swarm.warmup + Duration::from_millis(rng.random_range(0..200));
    tokio::time::sleep(start.saturating_sub(now())).await;
    while now() < swarm.end() {
        let mut index = match &zipf {
            Some(z) => z.sample(&mut rng) as usize - 1,
            None => rng.random_range(0..swarm.keys),
        };
        let roll = rng.random_range(0..100);
        let mut kind = if roll < swarm.mix.0 {
            Kind::Get
        } else if roll < swarm.mix.0 + swarm.mix.1 {
            Kind::Set
        } else {
            Kind::Remove
        };
        if kind != Kind::Get && swarm.hot_writes > 0.0 && rng.random_bool(swarm.hot_writes) {
            // One of this worker's three hottest keys (the lowest indices are the
            // hottest under Zipf): writes that race the fills and copies of busy keys.
            index = worker + writers * rng.random_range(0..3);
            index = index.min(swarm.keys - 1);
        }
        if kind != Kind::Get && index % writers != worker {
            // Not this worker's key to write.
            kind = Kind::Get;
        }
        let key = format!("k{index}");
        let at = now();
        let targets = swarm.targets(at);
        let node = targets[rng.random_range(0..targets.len())];
        let (version, body) = match kind {
            Kind::Get => (None, Bytes::new()),
            Kind::Set | Kind::Remove => {
                let mut db = db.lock().unwrap();
                let v = db.bump(&key);
                (Some(v), value_of(&key, v, db.value_size()))
            }
        };
        let (method, body) = match kind {
            Kind::Get => (Method::GET, Bytes::new()),
            Kind::Set => (Method::PUT, body),
            Kind::Remove => (Method::DELETE, Bytes::new()),
        };
        let path = key_path(&key);
        let start = now();
        let host = host_name(node);
        let result = if swarm.resp {
            let command = resp::command(kind, &key, &body);
            match tokio::time::timeout(swarm.client_timeout(), resp::call(&host, &command)).await {
                Ok(Ok(reply)) => resp::outcome(kind, reply),
                Ok(Err(e)) => Outcome::Failed(e.to_string()),
                Err(_) => Outcome::NoReply,
            }
        } else {
            match tokio::time::timeout(swarm.client_timeout(), call(&host, method, &path, body))
                .await
            {
                Ok(Ok((StatusCode::OK, body))) if kind == Kind::Get => Outcome::Ok(body),
                Ok(Ok((StatusCode::OK, _))) => Outcome::Ok(Bytes::new()),
                Ok(Ok((status, body))) => {
                    Outcome::Status(status.as_u16(), String::from_utf8_lossy(&body).into_owned())
                }
                Ok(Err(e)) => Outcome::Failed(e.to_string()),
                Err(_) => Outcome::NoReply,
            }
        };
        ops.lock().unwrap().push(Op {
            worker,
            node,
            kind,
            key,
            version,
            start,
            end: now(),
            result,
        });
        let think = rng.random_range(Duration::ZERO..=swarm.think);
        tokio::time::sleep(think).await;
    }
    Ok(())
}
