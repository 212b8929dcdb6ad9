//! The TLS flags of `peercache serve`, reloading on SIGHUP, and `peercache certs`.
//! (A module of the binary, not of the library.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use peercache::tls::certs::{Ca, DEFAULT_DAYS};
use peercache::tls::{Tls, TlsFiles};

/// TLS of the node's ports.
#[derive(Args, Debug)]
pub struct TlsArgs {
    /// This node's certificate chain (PEM) for mutual TLS between peers: it must name
    /// the node's member id (its --node-id, or the host of its advertised address) and
    /// be signed by --tls-ca. With it, peers without a certificate signed by the CA are
    /// refused. Reloaded on SIGHUP.
    #[arg(long, env = "PEERCACHE_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "PEERCACHE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The CA certificates (PEM) that sign the peers' certificates.
    #[arg(long, env = "PEERCACHE_TLS_CA", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
    /// A certificate chain (PEM) for the client API: HTTPS, and TLS on the Redis port
    /// when it is on (it may be --tls-cert's).
    /// Reloaded on SIGHUP.
    #[arg(long, env = "PEERCACHE_HTTP_TLS_CERT", requires = "http_tls_key")]
    pub http_tls_cert: Option<PathBuf>,
    /// The private key of --http-tls-cert (PEM).
    #[arg(long, env = "PEERCACHE_HTTP_TLS_KEY", requires = "http_tls_cert")]
    pub http_tls_key: Option<PathBuf>,
}

/// The TLS of each port the flags ask for.
pub struct Ports {
    pub peer: Option<Arc<Tls>>,
    pub http: Option<Arc<Tls>>,
}

impl TlsArgs {
    /// Reads the material, so a bad file stops the node at start-up.
    pub fn load(&self) -> anyhow::Result<Ports> {
        let peer = match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(Arc::new(
                Tls::mutual(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    ca: Some(ca.clone()),
                })
                .context("peer TLS (--tls-cert, --tls-key, --tls-ca)")?,
            )),
            _ => None,
        };
        let http = match (&self.http_tls_cert, &self.http_tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(
                Tls::server_only(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    ca: None,
                })
                .context("HTTPS (--http-tls-cert, --http-tls-key)")?,
            )),
            _ => None,
        };
        Ok(Ports { peer, http })
    }
}

impl Ports {
    /// Warns once for each port bound beyond loopback without TLS.
    pub fn warn_if_open(&self, grpc_addr: &str, http_addr: &str) {
        for (addr, warning) in self.open(grpc_addr, http_addr) {
            tracing::warn!(addr, "{warning}");
        }
    }

    /// The ports bound beyond loopback without TLS, with what to say of each.
    fn open<'a>(&self, grpc_addr: &'a str, http_addr: &'a str) -> Vec<(&'a str, &'static str)> {
        let mut open = Vec::new();
        if self.peer.is_none() && !loopback(grpc_addr) {
            open.push((
                grpc_addr,
                "the peer (gRPC) port is bound beyond loopback without TLS: anyone who reaches it can read, write and invalidate every key; set --tls-cert, --tls-key and --tls-ca",
            ));
        }
        if self.http.is_none() && !loopback(http_addr) {
            open.push((
                http_addr,
                "the HTTP API is bound beyond loopback without TLS; set --http-tls-cert and --http-tls-key (and --auth-file for tokens)",
            ));
        }
        open
    }

    /// Reads the material of every port again (SIGHUP); a port whose files no longer
    /// read or fit keeps its old material.
    pub fn reload(&self) {
        for (port, tls) in [("peer", &self.peer), ("HTTP", &self.http)] {
            let Some(tls) = tls else { continue };
            match tls.reload() {
                Ok(()) => tracing::info!(port, "reloaded the TLS certificate, key and CA"),
                Err(e) => {
                    tracing::error!(port, error = %e, "reloading TLS failed; the old certificate stays in use")
                }
            }
        }
    }
}

/// Whether `addr` (HOST:PORT) is a loopback address; a host name counts as beyond.
pub fn loopback(addr: &str) -> bool {
    addr.parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback())
        || addr.starts_with("localhost:")
}

/// `peercache certs`: a CA and node certificates for a demo cluster.
#[derive(Args, Debug)]
pub struct Certs {
    /// Directory to write into (made if missing): ca.pem and ca-key.pem, and for each
    /// node NAME.pem and NAME-key.pem.
    #[arg(long, default_value = "certs")]
    out: PathBuf,
    /// A node certificate to make, for its member id and any other names: NAME[+NAME...]
    /// (DNS names or IP addresses; e.g. node1+10.0.0.5), repeatable. Its files are named
    /// after the first name.
    #[arg(long = "node", required = true)]
    nodes: Vec<String>,
    /// Sign with this existing CA (with --ca-key) instead of making a new one.
    #[arg(long, requires = "ca_key")]
    ca_cert: Option<PathBuf>,
    /// The private key of --ca-cert.
    #[arg(long, requires = "ca_cert")]
    ca_key: Option<PathBuf>,
    /// Days the node certificates are valid for.
    #[arg(long, default_value_t = DEFAULT_DAYS)]
    days: u32,
}

impl Certs {
    pub fn run(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("making {}", self.out.display()))?;
        let ca = match (&self.ca_cert, &self.ca_key) {
            (Some(cert), Some(key)) => {
                let read = |p: &Path| {
                    std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
                };
                Ca::from_pem(&read(cert)?, &read(key)?)?
            }
            _ => {
                let ca = Ca::new("peercache CA")?;
                self.write("ca.pem", &ca.cert_pem(), false)?;
                self.write("ca-key.pem", &ca.key_pem(), true)?;
                ca
            }
        };
        for node in &self.nodes {
            let names: Vec<&str> = node.split('+').collect();
            if names.iter().any(|n| n.is_empty()) {
                bail!("--node {node:?}: empty name");
            }
            let file = names[0].replace(['/', ':', '\\'], "_");
            let made = ca
                .issue_for_days(&names, 0, self.days)
                .with_context(|| format!("--node {node:?}"))?;
            self.write(&format!("{file}.pem"), &made.cert, false)?;
            self.write(&format!("{file}-key.pem"), &made.key, true)?;
        }
        println!("wrote certificates to {}", self.out.display());
        Ok(())
    }

    /// Writes `name` under --out; a private key readable by its owner only.
    fn write(&self, name: &str, text: &str, private: bool) -> anyhow::Result<()> {
        let path = self.out.join(name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        use std::io::Write;
        options
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use peercache::tls::TlsPem;

    use super::*;

    #[test]
    fn loopback_addresses_are_told_apart_from_the_rest() {
        for addr in [
            "127.0.0.1:7001",
            "127.9.9.9:1",
            "[::1]:7001",
            "localhost:80",
        ] {
            assert!(loopback(addr), "{addr}");
        }
        for addr in ["0.0.0.0:7001", "10.0.0.5:7001", "[::]:7001", "node1:7001"] {
            assert!(!loopback(addr), "{addr}");
        }
    }

    #[test]
    fn only_ports_beyond_loopback_without_tls_are_warned_of() {
        let plain = Ports {
            peer: None,
            http: None,
        };
        assert!(plain.open("127.0.0.1:7001", "127.0.0.1:8001").is_empty());
        let open = plain.open("0.0.0.0:7001", "10.0.0.5:8001");
        assert_eq!(open.len(), 2);
        assert!(open[0].0 == "0.0.0.0:7001" && open[0].1.contains("--tls-cert"));
        assert!(open[1].0 == "10.0.0.5:8001" && open[1].1.contains("--http-tls-cert"));
        let secured = Ports {
            peer: Some(Arc::new(Tls::mutual_pem(pem()).unwrap())),
            http: Some(Arc::new(Tls::mutual_pem(pem()).unwrap())),
        };
        assert!(secured.open("0.0.0.0:7001", "0.0.0.0:8001").is_empty());
    }

    /// A node's certificate, key and CA.
    fn pem() -> TlsPem {
        let ca = Ca::new("test CA").unwrap();
        let node = ca.issue(&["127.0.0.1"]).unwrap();
        TlsPem {
            cert: node.cert,
            key: node.key,
            ca: Some(ca.cert_pem()),
        }
    }
}
