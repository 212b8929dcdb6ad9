//! Two races of the request path, set up on purpose: a write while a fill of the same key
//! is under way, on the owner and on a member that asked the owner.
//!
//! Two real `Node`s with a static peer list; the loader reads the source's version of the
//! key when it starts and answers 400 ms later, so a write lands inside every load. Every
//! fetched copy is kept (`fill_ratio` 1.0) for longer than the test runs.
//!
//! - A get that starts after a write's acknowledgement must not join a flight that
//!   started before the write: the write detaches the key's flights on the owner (its
//!   load) and on the writer's node (its call to the owner).
//! - An answer the owner sent before the write, arriving at a member after the write's
//!   invalidation, must not be kept as a hot copy.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use peercache::{HotConfig, LoaderFn};

use super::replayed;
use crate::harness::BoxError;
use crate::harness::group::GroupSpec;
use crate::harness::http::{Exchange, Recorder, key_path, wait_healthy};
use crate::harness::node::{NodeSpec, Peers, advertise, static_ring};
use crate::harness::world::World;

const NODES: usize = 2;
const LOAD: Duration = Duration::from_millis(400);

/// The source: a version per key, which writers bump before they tell the cache.
type Source = Arc<Mutex<BTreeMap<String, u64>>>;

fn node(i: usize, seed: u64, source: Source) -> NodeSpec {
    let loader = LoaderFn(move |key: String| {
        let version = source.lock().unwrap().get(&key).copied().unwrap_or(0);
        async move {
            tokio::time::sleep(LOAD).await;
            Ok(Bytes::from(format!("{key}@{version}")))
        }
    });
    let group = GroupSpec {
        hot: Some(HotConfig {
            ttl: Duration::from_secs(3600),
            fill_ratio: 1.0,
            ..HotConfig::default()
        }),
        timeout: Some(Duration::from_secs(5)),
        ..GroupSpec::new(loader)
    };
    NodeSpec::new(i, seed, group, Peers::Static(NODES))
}

/// A key node `owner` owns.
fn key_owned_by(owner: usize, tag: &str) -> String {
    let ring = static_ring(NODES);
    (0..)
        .map(|i| format!("{tag}{i}"))
        .find(|k| ring.owner(k).is_some_and(|m| m.id == advertise(owner)))
        .expect("some key")
}

/// Starts a get of `key` through `node` that the slow load keeps in flight, then writes
/// the key (cache-aside: the source first) through `writer` with `method`, and once that
/// is acknowledged reads it through `reader`: the answer must be the new version.
async fn race(
    client: &Recorder,
    source: &Source,
    key: &str,
    (first, writer, reader): (usize, usize, usize),
    method: Method,
) -> Result<String, BoxError> {
    let early = {
        let (client, key) = (client.clone(), key.to_owned());
        tokio::spawn(async move { client.get(first, &key).await })
    };
    tokio::time::sleep(LOAD / 4).await;
    let version = {
        let mut source = source.lock().unwrap();
        let v = source.entry(key.to_owned()).or_default();
        *v += 1;
        *v
    };
    let body = if method == Method::PUT {
        format!("{key}@{version}")
    } else {
        String::new()
    };
    let (status, _) = client.call(writer, method, &key_path(key), &body).await?;
    assert_eq!(status, StatusCode::OK, "the write of {key}");
    let (status, got) = client.get(reader, key).await?;
    assert_eq!(status, StatusCode::OK, "the read of {key}");
    let (status, _) = early.await??;
    assert_eq!(status, StatusCode::OK, "the early read of {key}");
    // Once more, after every flight ended: what the node keeps.
    let (_, kept) = client.get(reader, key).await?;
    assert_eq!(got, kept, "{key}: what the reader answered, then kept");
    Ok(got)
}

async fn drive(client: Recorder, source: Source) -> Result<Vec<String>, BoxError> {
    wait_healthy(NODES).await;
    let (owner, other) = (0, 1);
    let mut answers = vec![];
    // On the owner: a Remove while its load runs; the read after it loads again.
    let key = key_owned_by(owner, "a");
    answers.push(
        race(
            &client,
            &source,
            &key,
            (owner, owner, owner),
            Method::DELETE,
        )
        .await?,
    );
    // On the other member: a Remove through it while its call to the owner runs.
    let key = key_owned_by(owner, "b");
    answers.push(
        race(
            &client,
            &source,
            &key,
            (other, other, other),
            Method::DELETE,
        )
        .await?,
    );
    // The other member's call is answered after the owner's invalidation reached it.
    let key = key_owned_by(owner, "c");
    answers.push(race(&client, &source, &key, (other, owner, other), Method::PUT).await?);
    Ok(answers)
}

fn run(seed: u64) -> (Vec<String>, Vec<Exchange>) {
    let source = Source::default();
    let nodes: Vec<NodeSpec> = (0..NODES).map(|i| node(i, seed, source.clone())).collect();
    let world = World::new(seed);
    world.run_nodes_and_client(nodes, move |client| drive(client, source))
}

#[test]
fn a_read_after_a_write_sees_it_whatever_was_in_flight() {
    let test = "races::a_read_after_a_write_sees_it_whatever_was_in_flight";
    replayed(test, run, |seed, (answers, exchanges)| {
        let keys = [
            key_owned_by(0, "a"),
            key_owned_by(0, "b"),
            key_owned_by(0, "c"),
        ];
        let want: Vec<String> = keys.iter().map(|k| format!("{k}@1")).collect();
        assert_eq!(answers, &want, "exchanges: {exchanges:#?}");
        println!("sim: scenario=races seed={seed} ops={}", exchanges.len());
    });
}
