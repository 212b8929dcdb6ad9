//! The processes a cluster run starts: etcd, `peercache serve` nodes and the ceiling
//! server, each on free loopback ports, logging to files, killed when dropped.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::time::Instant;

use crate::client::RingView;

/// A free port on 127.0.0.1 (free when asked; the OS may hand it out again later).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `127.0.0.1:<a free port>`, for a process to listen on.
pub fn free_addr() -> anyhow::Result<String> {
    Ok(format!("127.0.0.1:{}", free_port()?))
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    /// Name in messages.
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with its output in `dir/<name>.log`.
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> anyhow::Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// kill -9, and reap it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (`STOP`, `CONT`, …) with kill(1).
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -{signal} {}: {status}", self.name);
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it has not exited within 5 s.
    pub async fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.signal("TERM");
            if self.exited_within(Duration::from_secs(5)).await.is_some() {
                return;
            }
        }
        self.kill9();
    }

    /// Waits up to `limit` for it to exit (after a signal): its exit status, or `None`
    /// if it is still running then.
    pub async fn exited_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An error if the process has exited, with the end of its log.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("{} exited ({status}); log:\n{}", self.name, self.log_tail()),
        }
    }

    /// Whether it stopped because a port it was given was taken meanwhile (ports are
    /// picked free, released, then bound by the process: another socket may come first).
    pub fn lost_a_port(&self) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|log| log.contains("Address already in use"))
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until `url` answers 200, failing if the process exits or 20 s pass.
    pub async fn until_ok(&mut self, http: &reqwest::Client, url: &str) -> anyhow::Result<()> {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            self.check_running()?;
            let resp = http.get(url).timeout(Duration::from_secs(1)).send().await;
            if resp.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > until {
                bail!(
                    "{} did not answer {url} within 20 s; log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A single-member etcd on loopback with its data in a fresh directory.
pub struct Etcd {
    /// Client URL.
    pub endpoint: String,
    proc: Proc,
}

impl Etcd {
    /// Starts `bin` and waits until it is healthy.
    pub async fn start(bin: &Path, dir: &Path, http: &reqwest::Client) -> anyhow::Result<Etcd> {
        let (client, peer) = (free_port()?, free_port()?);
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut cmd = Command::new(bin);
        cmd.args([
            "--name",
            "loadgen",
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
        ])
        .arg("--data-dir")
        .arg(dir.join("etcd-data"))
        .args([
            "--listen-client-urls",
            &endpoint,
            "--advertise-client-urls",
            &endpoint,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("loadgen={peer_url}")]);
        let mut proc = Proc::spawn("etcd", cmd, dir).map_err(|e| {
            e.context(format!(
                "etcd is needed for --etcd (or use --static): install it with \
                 `apt-get install -y etcd-server`, or point ETCD_BIN at an etcd binary (tried {})",
                bin.display()
            ))
        })?;
        proc.until_ok(http, &format!("{endpoint}/health")).await?;
        Ok(Etcd { endpoint, proc })
    }

    /// Stops it.
    pub async fn stop(mut self) {
        self.proc.stop().await;
    }
}

/// How the nodes learn about each other.
#[derive(Debug, Clone)]
pub enum Membership {
    /// A fixed `--peers` list.
    Static,
    /// etcd at this endpoint, under this key prefix.
    Etcd {
        /// Client URL.
        endpoint: String,
        /// Key prefix, unique to one cluster.
        prefix: String,
    },
}

/// What every node of a cluster is started with.
#[derive(Debug, Clone)]
pub struct NodeSetup {
    /// The `peercache` binary.
    pub bin: PathBuf,
    /// Where logs go.
    pub dir: PathBuf,
    /// `--group` value.
    pub group: String,
    /// `--source` value.
    pub source: String,
    /// Keep hot copies of values fetched twice from peers.
    pub hot: bool,
    /// Membership.
    pub membership: Membership,
    /// Certificates, for either TLS below: a directory made by `peercache certs`, with
    /// `ca.pem` and `NAME.pem`, `NAME-key.pem` for each node name.
    pub certs: Option<PathBuf>,
    /// Mutual TLS between peers.
    pub peer_tls: bool,
    /// HTTPS on the client API.
    pub https: bool,
}

/// A running `peercache serve`.
pub struct Node {
    /// Member id (etcd) or gRPC address (static).
    pub id: String,
    /// HTTP base URL.
    pub url: String,
    /// Redis-protocol address, `host:port`.
    pub resp: String,
    /// The process.
    pub proc: Proc,
}

impl Node {
    /// Starts node `name` on `grpc`/`http`; `peers` is the static list (ignored with etcd).
    pub fn start(
        setup: &NodeSetup,
        name: &str,
        grpc: &str,
        http: &str,
        peers: &[String],
    ) -> anyhow::Result<Node> {
        let resp = free_addr()?;
        let mut cmd = Command::new(&setup.bin);
        cmd.arg("serve")
            .args([
                "--grpc-addr",
                grpc,
                "--http-addr",
                http,
                "--resp-addr",
                &resp,
            ])
            .args(["--group", &setup.group, "--source", &setup.source])
            .args([
                "--hot-fill",
                "0",
                "--hot-second-fetch",
                if setup.hot { "true" } else { "false" },
            ])
            .args(["--timeout", "5s"])
            .env_remove("PEERCACHE_ETCD")
            .env_remove("PEERCACHE_PEERS");
        let id = match &setup.membership {
            Membership::Static => {
                cmd.args(["--peers", &peers.join(",")]);
                grpc.to_owned()
            }
            Membership::Etcd { endpoint, prefix } => {
                cmd.args([
                    "--etcd",
                    endpoint,
                    "--etcd-prefix",
                    prefix,
                    "--node-id",
                    name,
                ])
                .args(["--lease-ttl", "3s"]);
                name.to_owned()
            }
        };
        if let Some(certs) = &setup.certs {
            let (cert, key) = (
                certs.join(format!("{name}.pem")),
                certs.join(format!("{name}-key.pem")),
            );
            if setup.peer_tls {
                cmd.arg("--tls-cert").arg(&cert).arg("--tls-key").arg(&key);
                cmd.arg("--tls-ca").arg(certs.join("ca.pem"));
            }
            if setup.https {
                cmd.arg("--http-tls-cert")
                    .arg(&cert)
                    .arg("--http-tls-key")
                    .arg(&key);
            }
        }
        let proc = Proc::spawn(name, cmd, &setup.dir).with_context(|| {
            format!("the peercache binary {} (build it with `cargo build --release --bins`, or set --peercache-bin)", setup.bin.display())
        })?;
        Ok(Node {
            id,
            url: format!("{}://{http}", if setup.https { "https" } else { "http" }),
            resp,
            proc,
        })
    }

    /// Waits until its `/healthz` answers 200, failing if it exits or 20 s pass.
    pub async fn until_healthy(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let url = format!("{}/healthz", self.url);
        self.proc.until_ok(http, &url).await
    }
}

/// Waits until every one of `nodes` sees exactly `nodes` as the members of its ring;
/// returns how long that took.
pub async fn until_rings_agree(
    http: &reqwest::Client,
    nodes: &mut [Node],
    limit: Duration,
) -> anyhow::Result<Duration> {
    let begin = Instant::now();
    let mut want: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
    want.sort();
    loop {
        let mut agreed = true;
        for node in nodes.iter_mut() {
            node.proc.check_running()?;
            let seen = match RingView::fetch(http, &node.url).await {
                Ok(view) => {
                    let mut seen: Vec<String> =
                        view.ring.members().iter().map(|m| m.id.clone()).collect();
                    seen.sort();
                    seen
                }
                Err(_) => Vec::new(),
            };
            agreed &= seen == want;
        }
        if agreed {
            return Ok(begin.elapsed());
        }
        if begin.elapsed() > limit {
            bail!("the rings did not converge on {want:?} within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
