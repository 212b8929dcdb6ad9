//! `peercache serve` processes that find each other through etcd, and what the tests
//! read from them: their rings and their answers.

use std::process::{Command, Stdio};
use std::time::Duration;

use peercache::{Member, Ring};
use serde_json::Value;
use tokio::time::Instant;

use crate::common::process::{Proc, TempDir, free_ports};

/// Lease TTL of the test nodes: the default of `peercache serve`.
pub const LEASE_TTL: Duration = Duration::from_secs(3);

/// One `peercache serve --etcd …` process.
pub struct ServeNode {
    pub id: String,
    pub weight: u32,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub proc: Proc,
    /// Holds its log (stderr).
    logs: TempDir,
}

impl ServeNode {
    /// Starts node `id` (not waiting for it) in the cluster under `prefix`.
    pub fn spawn(etcd: &str, prefix: &str, id: &str, weight: u32) -> Self {
        Self::spawn_with(etcd, prefix, id, weight, &[], &[])
    }

    /// [`spawn`](Self::spawn), with more flags and environment variables.
    pub fn spawn_with(
        etcd: &str,
        prefix: &str,
        id: &str,
        weight: u32,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Self {
        let [grpc, http] = free_ports();
        let logs = TempDir::new("node-log");
        let log = std::fs::File::create(logs.path().join("stderr")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_peercache"))
            .arg("serve")
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
            .args(["--http-addr", &format!("127.0.0.1:{http}")])
            // The endpoints and prefix from the environment, as a deployment might.
            .env("PEERCACHE_ETCD", etcd)
            .env("PEERCACHE_ETCD_PREFIX", prefix)
            .args(["--node-id", id, "--weight", &weight.to_string()])
            .args(["--group", "g:16MiB", "--source", "demo"])
            .env("RUST_LOG", "warn")
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the peercache binary runs");
        ServeNode {
            id: id.to_owned(),
            weight,
            url: format!("http://127.0.0.1:{http}"),
            proc: Proc::new(format!("node {id}"), child),
            logs,
        }
    }

    /// What it logged so far (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stderr")).unwrap_or_default()
    }

    /// The members of its ring, as (id, weight), sorted by id; `None` if it does not
    /// answer.
    pub async fn ring(&self) -> Option<Vec<(String, u64)>> {
        let body = json(&format!("{}/v1/ring", self.url)).await?;
        let mut members: Vec<(String, u64)> = (body["members"].as_array()?.iter())
            .map(|m| {
                let id = m["id"].as_str().unwrap_or_default().to_owned();
                (id, m["weight"].as_u64().unwrap_or_default())
            })
            .collect();
        members.sort();
        Some(members)
    }

    /// `GET` of `key` in group `g`: the status and body, or the transport error.
    pub async fn get(&self, key: &str) -> Result<(u16, String), String> {
        let url = format!("{}/v1/groups/g/keys/{key}", self.url);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let r = client.get(url).send().await.map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        Ok((status, r.text().await.map_err(|e| e.to_string())?))
    }

    /// A counter of group `g` from `/v1/stats`.
    pub async fn stat(&self, name: &str) -> u64 {
        let body = json(&format!("{}/v1/stats", self.url))
            .await
            .unwrap_or_else(|| panic!("{} answers /v1/stats", self.id));
        body["groups"]["g"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no stat {name} in {body}"))
    }
}

/// The JSON body at `url`; `None` if the request fails.
pub async fn json(url: &str) -> Option<Value> {
    let body = reqwest::get(url).await.ok()?.text().await.ok()?;
    serde_json::from_str(&body).ok()
}

/// The ring the given members make, as the nodes build it.
pub fn ring_of(nodes: &[&ServeNode]) -> Ring {
    let members = (nodes.iter()).map(|n| Member::new(&n.id, "").with_weight(n.weight));
    Ring::new(members, peercache::ring::DEFAULT_VNODES)
}

/// Waits until every node in `nodes` shows exactly `members` (id and weight) in its
/// ring, checking every 20 ms; returns how long it took from `since`. Fails, showing the
/// rings, at `limit` after `since`.
pub async fn rings_become(
    nodes: &[&ServeNode],
    members: &[&ServeNode],
    since: Instant,
    limit: Duration,
) -> Duration {
    let mut want: Vec<(String, u64)> = (members.iter())
        .map(|m| (m.id.clone(), u64::from(m.weight)))
        .collect();
    want.sort();
    loop {
        let mut rings = Vec::new();
        for n in nodes {
            rings.push((n.id.clone(), n.ring().await));
        }
        if rings.iter().all(|(_, r)| r.as_ref() == Some(&want)) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < limit,
            "after {:?} the rings are {rings:?}, want {want:?} everywhere",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
