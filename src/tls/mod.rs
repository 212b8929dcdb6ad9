//! TLS for the node's two ports (rustls on ring): mutual TLS between peers and
//! server-side TLS (HTTPS) for clients, over any [`Net`](crate::net::Net) stream, so
//! the same handshakes run on real sockets and inside the simulator.
//!
//! - **Peers** ([`Tls::mutual`]): the gRPC server asks every connection for a client
//!   certificate signed by the cluster's CA and refuses the handshake without one; a
//!   node dialling a peer presents its own certificate and checks the peer's against the
//!   CA *and against the member id it dials*, so a member record that names an address
//!   whose certificate is not that member's is never sent a request.
//! - **Clients** ([`Tls::server_only`]): HTTPS with the node's certificate.
//!
//! Certificates and keys come from PEM files ([`TlsFiles`]) and are read again by
//! [`Tls::reload`] (the binary calls it on SIGHUP): new connections use the new
//! material, open ones keep theirs. A reload that fails keeps the old material.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::either::Either;

use crate::error::{Error, Result};

pub mod certs;

/// Longest a TLS handshake may take on an accepted connection; a client that stalls
/// in it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a node's TLS material lives: its certificate chain and private key, and the
/// CA that signs its peers' certificates (peers only).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, the node's own first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates that sign peers' certificates; `None` for HTTPS alone.
    pub ca: Option<PathBuf>,
}

/// PEM text of a node's TLS material, as [`TlsFiles`] holds it.
#[derive(Debug, Clone)]
pub struct TlsPem {
    /// The certificate chain.
    pub cert: String,
    /// The private key.
    pub key: String,
    /// The CA certificates (peers only).
    pub ca: Option<String>,
}

/// Where the material comes from: files read again on reload, or fixed text.
#[derive(Debug, Clone)]
enum Source {
    Files(TlsFiles),
    Pem(TlsPem),
}

impl Source {
    fn read(&self) -> Result<TlsPem> {
        match self {
            Source::Pem(pem) => Ok(pem.clone()),
            Source::Files(files) => Ok(TlsPem {
                cert: read_file(&files.cert)?,
                key: read_file(&files.key)?,
                ca: files.ca.as_deref().map(read_file).transpose()?,
            }),
        }
    }
}

fn read_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))
}

/// The rustls configurations built from one reading of the material.
struct Built {
    server: Arc<ServerConfig>,
    /// Peers only: the configuration a node dials its peers with.
    client: Option<Arc<ClientConfig>>,
}

/// Counts of a [`Tls`]'s handshakes that failed, read by the metrics and stats.
#[derive(Debug, Default)]
pub struct TlsCounters {
    refused_incoming: AtomicU64,
    refused_outgoing: AtomicU64,
    reloads: AtomicU64,
}

impl TlsCounters {
    /// Incoming handshakes that failed: no certificate, one the CA did not sign, an
    /// expired one, a stall past [`HANDSHAKE_TIMEOUT`], or not TLS at all.
    pub fn refused_incoming(&self) -> u64 {
        self.refused_incoming.load(Ordering::Relaxed)
    }

    /// Handshakes with peers this node dialled that failed, most often because the
    /// peer's certificate was not the member's it dialled.
    pub fn refused_outgoing(&self) -> u64 {
        self.refused_outgoing.load(Ordering::Relaxed)
    }

    /// Successful reloads of the material.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }
}

/// TLS of one of the node's ports, reloadable.
pub struct Tls {
    mutual: bool,
    source: Source,
    built: ArcSwap<Built>,
    counters: TlsCounters,
}

impl Tls {
    /// Mutual TLS between peers, from files (the CA is required).
    pub fn mutual(files: TlsFiles) -> Result<Self> {
        if files.ca.is_none() {
            return Err(Error::Config(
                "peer TLS needs the CA that signs the peers' certificates".into(),
            ));
        }
        Self::new(true, Source::Files(files))
    }

    /// Mutual TLS between peers, from PEM text (the CA is required).
    pub fn mutual_pem(pem: TlsPem) -> Result<Self> {
        if pem.ca.is_none() {
            return Err(Error::Config(
                "peer TLS needs the CA that signs the peers' certificates".into(),
            ));
        }
        Self::new(true, Source::Pem(pem))
    }

    /// Server-side TLS (HTTPS): no client certificates asked for.
    pub fn server_only(files: TlsFiles) -> Result<Self> {
        Self::new(false, Source::Files(files))
    }

    fn new(mutual: bool, source: Source) -> Result<Self> {
        let built = build(mutual, &source.read()?)?;
        Ok(Tls {
            mutual,
            source,
            built: ArcSwap::from_pointee(built),
            counters: TlsCounters::default(),
        })
    }

    /// Reads the material again; new connections use it. On failure the old material
    /// stays in use.
    pub fn reload(&self) -> Result<()> {
        let built = build(self.mutual, &self.source.read()?)?;
        self.built.store(Arc::new(built));
        self.counters.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Its handshake counts.
    pub fn counters(&self) -> &TlsCounters {
        &self.counters
    }

    /// Runs the server side of a handshake on `stream`, within [`HANDSHAKE_TIMEOUT`];
    /// a failure is counted.
    pub(crate) async fn accept<S>(&self, stream: S) -> io::Result<tokio_rustls::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = TlsAcceptor::from(self.built.load().server.clone());
        let shake = crate::time::within(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
        let result = match shake {
            Ok(shook) => shook,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            )),
        };
        match result {
            Ok(tls) => Ok(tokio_rustls::TlsStream::Server(tls)),
            Err(e) => {
                self.counters
                    .refused_incoming
                    .fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// `stream` as a client port serves it: through a TLS handshake when `tls` is set,
    /// else as it is.
    pub(crate) async fn accept_if<S>(
        tls: Option<&Tls>,
        stream: S,
    ) -> io::Result<Either<S, tokio_rustls::TlsStream<S>>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match tls {
            None => Ok(Either::Left(stream)),
            Some(tls) => tls.accept(stream).await.map(Either::Right),
        }
    }

    /// Runs the client side of a handshake with the peer whose member id is `id` over
    /// `stream`: the peer's certificate must be signed by the CA and name `id` (its
    /// host part, without a port). A failure is counted.
    pub(crate) async fn connect<S>(
        &self,
        id: &str,
        stream: S,
    ) -> io::Result<tokio_rustls::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(client) = self.built.load().client.clone() else {
            return Err(io::Error::other("this TLS configuration does not dial"));
        };
        let name = server_name(id)?;
        match TlsConnector::from(client).connect(name, stream).await {
            Ok(tls) => Ok(tokio_rustls::TlsStream::Client(tls)),
            Err(e) => {
                self.counters
                    .refused_outgoing
                    .fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("mutual", &self.mutual)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The name a member's certificate must carry: its id, or the host part of an id
/// written `host:port` (a static membership's ids are addresses).
pub fn server_name(id: &str) -> io::Result<ServerName<'static>> {
    let host = match id.rsplit_once(':') {
        // `[v6]:port`, `v4:port` or `name:port`; a bare v6 address has several colons
        // and no brackets.
        Some((host, port)) if port.parse::<u16>().is_ok() && !host.contains(':') => host,
        Some((host, port)) if port.parse::<u16>().is_ok() && host.starts_with('[') => {
            host.trim_start_matches('[').trim_end_matches(']')
        }
        _ => id,
    };
    ServerName::try_from(host.to_owned()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("member id {id:?} is not a name a certificate can carry: {e}"),
        )
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build(mutual: bool, pem: &TlsPem) -> Result<Built> {
    let bad = |what: &str, e: &dyn std::fmt::Display| Error::Config(format!("{what}: {e}"));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.cert.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad("the certificate", &e))?;
    if chain.is_empty() {
        return Err(Error::Config(
            "the certificate file holds no certificate".into(),
        ));
    }
    let key = || {
        PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).map_err(|e| bad("the private key", &e))
    };
    let versions = |e: rustls::Error| bad("TLS versions", &e);
    let alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if !mutual {
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(versions)?
            .with_no_client_auth()
            .with_single_cert(chain, key()?)
            .map_err(|e| bad("the certificate and key", &e))?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        return Ok(Built {
            server: Arc::new(server),
            client: None,
        });
    }
    let ca = pem.ca.as_deref().unwrap_or_default();
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        let cert = cert.map_err(|e| bad("the CA", &e))?;
        roots.add(cert).map_err(|e| bad("the CA", &e))?;
    }
    if roots.is_empty() {
        return Err(Error::Config("the CA file holds no certificate".into()));
    }
    let roots = Arc::new(roots);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| bad("the CA", &e))?;
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(versions)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key()?)
        .map_err(|e| bad("the certificate and key", &e))?;
    server.alpn_protocols = alpn.clone();
    let mut client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(versions)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key()?)
        .map_err(|e| bad("the certificate and key", &e))?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Built {
        server: Arc::new(server),
        client: Some(Arc::new(client)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_name_the_host_their_certificate_carries() {
        let name = |id: &str| server_name(id).map(|n| n.to_str().into_owned());
        assert_eq!(name("node1").unwrap(), "node1");
        assert_eq!(name("node1:7000").unwrap(), "node1");
        assert_eq!(name("127.0.0.1:7001").unwrap(), "127.0.0.1");
        assert_eq!(name("[::1]:7001").unwrap(), "::1");
        assert_eq!(name("::1").unwrap(), "::1");
        assert!(name("bad name").is_err());
    }

    #[test]
    fn material_that_does_not_parse_is_a_clear_error() {
        let ca = certs::Ca::new("test").unwrap();
        let node = ca.issue(&["node1"]).unwrap();
        let good = TlsPem {
            cert: node.cert.clone(),
            key: node.key.clone(),
            ca: Some(ca.cert_pem()),
        };
        Tls::mutual_pem(good.clone()).unwrap();
        let err = |pem: TlsPem| Tls::mutual_pem(pem).unwrap_err().to_string();
        let no_ca = TlsPem {
            ca: None,
            ..good.clone()
        };
        assert!(err(no_ca).contains("needs the CA"));
        let empty_ca = TlsPem {
            ca: Some(String::new()),
            ..good.clone()
        };
        assert!(err(empty_ca).contains("CA file holds no certificate"));
        let no_cert = TlsPem {
            cert: "junk".into(),
            ..good.clone()
        };
        assert!(err(no_cert).contains("holds no certificate"));
        let bad_key = TlsPem {
            key: "junk".into(),
            ..good.clone()
        };
        assert!(err(bad_key).contains("private key"));
        let other = ca.issue(&["node2"]).unwrap();
        let mismatched = TlsPem {
            key: other.key,
            ..good
        };
        let mismatched = err(mismatched);
        assert!(mismatched.contains("certificate and key"), "{mismatched}");
    }
}
