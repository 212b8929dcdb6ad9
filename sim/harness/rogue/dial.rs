//! How the rogue dials a node's peer port: with its certificate from another CA, with
//! TLS but no client certificate, or in plaintext. Each is a peer client of the
//! project's own (`GrpcPeer`) on a fresh channel, so every call is a handshake of its
//! own; the rogue trusts the cluster CA (its certificate is public), so any refusal is
//! the node's.

use std::io;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use peercache::grpc::GrpcPeer;
use peercache::net::{ChannelTimeouts, SimNet};
use peercache::peer::{PeerRef, Unobserved};
use peercache::{Member, Net};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_rustls::TlsConnector;
use tonic::transport::Endpoint;

use crate::harness::tls::{cluster_ca_pem, rogue_tls};

/// Largest message the rogue's clients send or accept.
const LIMIT: usize = 1 << 20;

/// What the rogue presents when it dials a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Credential {
    /// TLS, with its certificate from another CA.
    ForeignCert,
    /// TLS, without a client certificate.
    NoCert,
    /// No TLS at all.
    Plaintext,
}

impl Credential {
    pub const ALL: [Credential; 3] = [
        Credential::ForeignCert,
        Credential::NoCert,
        Credential::Plaintext,
    ];
}

/// A peer client of `node` on a fresh channel, presenting `how`.
pub fn dial(how: Credential, node: &Member) -> peercache::Result<PeerRef> {
    let connect = |tls| {
        peercache::grpc::connector(
            SimNet,
            ChannelTimeouts::default(),
            tls,
            LIMIT,
            peercache::grpc::Coalescing::default(),
            Arc::new(Unobserved),
        )
    };
    match how {
        Credential::ForeignCert => connect(Some(rogue_tls()))(node),
        Credential::Plaintext => connect(None)(node),
        Credential::NoCert => Ok(without_cert(node)),
    }
}

/// A peer client that shakes hands as the node's peers do (the cluster CA, the member
/// id as the server name) but shows no certificate of its own.
fn without_cert(node: &Member) -> PeerRef {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(cluster_ca_pem().as_bytes()) {
        roots
            .add(cert.expect("the cluster CA parses"))
            .expect("the cluster CA is a CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    let (id, addr) = (node.id.clone(), node.addr.clone());
    let dial = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let (connector, id, addr) = (connector.clone(), id.clone(), addr.clone());
        async move {
            let name = peercache::tls::server_name(&id)?;
            let tcp = SimNet.connect(&addr).await?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, io::Error>(TokioIo::new(tls))
        }
    });
    let channel = Endpoint::from_shared(format!("http://{}", node.addr))
        .expect("a member's address makes a URI")
        .connect_with_connector_lazy(dial);
    Arc::new(GrpcPeer::new(
        node.id.as_str(),
        channel,
        LIMIT,
        Arc::new(Unobserved),
    ))
}
