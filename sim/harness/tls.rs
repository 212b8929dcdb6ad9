//! Certificates of the simulated hosts: one cluster CA signing a certificate per node,
//! and another CA signing the rogue host's. Made once per process (rcgen, ECDSA P-256)
//! and valid for [`DEFAULT_DAYS`](peercache::tls::certs::DEFAULT_DAYS): rustls checks
//! validity against the real clock, also inside the simulation. Each run makes fresh
//! [`Tls`] objects from them, so handshake counters start at zero every run.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Mutex};

use peercache::tls::certs::{Ca, NodeCert};
use peercache::tls::{Tls, TlsPem};

use super::node::host_name;
use super::rogue::ROGUE_HOST;

/// Whether the nodes talk to each other over mutual TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerTls {
    /// Plaintext gRPC between nodes.
    Off,
    /// Every node presents a certificate of the cluster CA naming its host, and checks
    /// its peers' against the CA and the member id it dials.
    Mutual,
}

/// The CAs and the certificates issued so far, by host name.
struct Material {
    cluster: Ca,
    foreign: Ca,
    issued: Mutex<BTreeMap<String, NodeCert>>,
}

static MATERIAL: LazyLock<Material> = LazyLock::new(|| Material {
    cluster: Ca::new("peercache sim cluster CA").expect("a CA can be made"),
    foreign: Ca::new("peercache sim rogue CA").expect("a CA can be made"),
    issued: Mutex::new(BTreeMap::new()),
});

/// The certificate `ca` issued for `host`, made on first use.
fn cert(host: &str, ca: impl Fn(&Material) -> &Ca) -> NodeCert {
    let m = &*MATERIAL;
    let mut issued = m.issued.lock().unwrap();
    issued
        .entry(host.to_owned())
        .or_insert_with(|| ca(m).issue(&[host]).expect("a certificate can be issued"))
        .clone()
}

/// Node `i`'s peer TLS: its certificate names its host (`node<i>`), which is what
/// `server_name` makes of its member id `node<i>:7000`.
pub fn node_tls(i: usize) -> Arc<Tls> {
    let cert = cert(&host_name(i), |m| &m.cluster);
    Arc::new(
        Tls::mutual_pem(TlsPem {
            cert: cert.cert,
            key: cert.key,
            ca: Some(MATERIAL.cluster.cert_pem()),
        })
        .expect("the cluster's material builds"),
    )
}

/// The rogue host's TLS: a certificate naming `rogue` from another CA, and the cluster
/// CA's certificate (public) as its trust, so its own side accepts the nodes'
/// certificates and any refusal is the nodes'.
pub fn rogue_tls() -> Arc<Tls> {
    let cert = cert(ROGUE_HOST, |m| &m.foreign);
    Arc::new(
        Tls::mutual_pem(TlsPem {
            cert: cert.cert,
            key: cert.key,
            ca: Some(MATERIAL.cluster.cert_pem()),
        })
        .expect("the rogue's material builds"),
    )
}

/// The cluster CA's certificate, PEM: public, so the rogue may trust it too.
pub fn cluster_ca_pem() -> String {
    MATERIAL.cluster.cert_pem()
}

/// The rogue's certificate and key, PEM, for the server it runs itself.
pub fn rogue_cert() -> NodeCert {
    cert(ROGUE_HOST, |m| &m.foreign)
}
