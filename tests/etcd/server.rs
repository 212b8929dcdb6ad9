//! A real etcd for one test: Debian's etcd-server binary on free loopback ports, with a
//! data directory of its own, killed and removed when the test ends. It serves clients
//! over plain HTTP/2, or over TLS requiring a client certificate.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use peercache::discovery::{Coordinator, EtcdConfig, EtcdCoordinator};
use tokio::time::Instant;

use crate::certs::{CertFiles, Pki};
use crate::common::process::{Proc, TempDir, free_ports};

/// The etcd binary: `$ETCD_BIN`, else `etcd` on the PATH. Missing, the test fails with
/// how to install it.
fn binary() -> PathBuf {
    let found = match std::env::var_os("ETCD_BIN") {
        Some(bin) => Some(PathBuf::from(bin)).filter(|p| p.is_file()),
        None => std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("etcd"))
                .find(|p| p.is_file())
        }),
    };
    found.unwrap_or_else(|| {
        panic!(
            "etcd is not installed (no `etcd` on the PATH, or $ETCD_BIN is not a file), and \
             these tests run a real one. Install it with `apt-get install -y etcd-server` \
             (Debian/Ubuntu; scripts/test.sh does this), or put an etcd 3.4+ binary on the \
             PATH or in $ETCD_BIN"
        )
    })
}

/// One etcd member on loopback.
pub struct EtcdServer {
    client_port: u16,
    peer_port: u16,
    proc: Option<Proc>,
    /// The data directory of the running process, and the log of every start.
    data: TempDir,
    logs: TempDir,
    starts: u32,
    tls: Option<Tls>,
}

/// The certificates of an etcd serving over TLS.
pub struct Tls {
    /// The CA that signed them all.
    pub pki: Pki,
    /// etcd's own.
    server: CertFiles,
    /// One it lets in.
    pub client: CertFiles,
}

impl EtcdServer {
    /// A fresh etcd, healthy.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A fresh etcd serving clients over TLS only (https), with a certificate signed by
    /// a new CA, and letting in only clients with a certificate of that CA; healthy.
    pub async fn start_tls() -> Self {
        let pki = Pki::new("etcd");
        let tls = Tls {
            server: pki.server(),
            client: pki.client("peercache"),
            pki,
        };
        Self::start_with(Some(tls)).await
    }

    async fn start_with(tls: Option<Tls>) -> Self {
        let [client_port, peer_port] = free_ports();
        let mut etcd = EtcdServer {
            client_port,
            peer_port,
            proc: None,
            data: TempDir::new("etcd-data"),
            logs: TempDir::new("etcd-logs"),
            starts: 0,
            tls,
        };
        etcd.run().await;
        etcd
    }

    /// Its client URL.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// Its certificates, if it serves over TLS.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// A client configuration it lets in (over TLS, with the client certificate).
    pub fn config(&self) -> EtcdConfig {
        EtcdConfig {
            tls: (self.tls.as_ref()).map(|tls| tls.client.tls(&tls.pki)),
            ..EtcdConfig::default()
        }
    }

    /// A client of it.
    pub async fn coordinator(&self) -> EtcdCoordinator {
        EtcdCoordinator::connect(&[self.endpoint()], self.config())
            .await
            .unwrap()
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill9();
        }
    }

    /// Starts it again on the same ports: with its data, or with an empty directory.
    pub async fn restart(&mut self, keep_data: bool) {
        self.kill();
        if !keep_data {
            self.data = TempDir::new("etcd-data");
        }
        self.run().await;
    }

    async fn run(&mut self) {
        self.starts += 1;
        let log_path = self.logs.path().join(format!("etcd-{}.log", self.starts));
        let log = std::fs::File::create(&log_path).unwrap();
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut command = Command::new(binary());
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.server.cert)
                .arg("--key-file")
                .arg(&tls.server.key)
                .arg("--trusted-ca-file")
                .arg(tls.pki.ca_file())
                .arg("--client-cert-auth");
        }
        let child = command
            .args(["--name", "test", "--data-dir"])
            .arg(self.data.path())
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdout(Stdio::null())
            .stderr(log.try_clone().unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary().display()));
        let mut proc = Proc::new("etcd", child);
        // Healthy: it answers a read.
        let c = self.coordinator().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if c.range("/health-check/").await.is_ok() {
                break;
            }
            if proc.child.try_wait().unwrap().is_some() || Instant::now() >= deadline {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                panic!(
                    "etcd on {client} did not become healthy; its log ends with:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.proc = Some(proc);
    }
}
