//! What write access to the member prefix buys without the cluster's certificates: two
//! nodes with mutual TLS, and member records written straight into etcd by someone else,
//! pointing at a listener of theirs. One forged member shows a certificate of another
//! CA naming the forged id; the other a certificate the cluster's CA did sign, but for
//! another name (a stolen node key, say). The nodes put both in their rings, yet no
//! request reaches either listener: each dial fails at the handshake, is counted, and
//! the keys those members would own are loaded by the asking node itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use peercache::discovery::Coordinator;
use peercache::tls::certs::{Ca, NodeCert};
use tokio::io::AsyncReadExt;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::ONE_AT_A_TIME;
use crate::common::metric;
use crate::common::process::TempDir;
use crate::nodes::{ServeNode, json};
use crate::server::EtcdServer;

const PREFIX: &str = "/peercache/forged/";

/// What a forged member's listener saw.
#[derive(Default)]
struct Seen {
    /// TCP connections accepted.
    connections: AtomicU64,
    /// TLS handshakes completed (a node accepted our certificate).
    handshakes: AtomicU64,
    /// Bytes of requests read after a handshake.
    bytes: AtomicU64,
}

/// A TLS listener on loopback presenting `cert`, counting what reaches it.
async fn listen(cert: &NodeCert) -> (String, Arc<Seen>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(cert.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(cert.key.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Seen::default());
    let counts = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counts.connections.fetch_add(1, Ordering::Relaxed);
            let (acceptor, counts) = (acceptor.clone(), counts.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                counts.handshakes.fetch_add(1, Ordering::Relaxed);
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = tls.read(&mut buf).await {
                    counts.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_member_record_is_not_routed_to() {
    let _one = ONE_AT_A_TIME.lock().await;
    let etcd = EtcdServer::start().await;
    let dir = TempDir::new("forged");
    let ca = Ca::new("cluster CA").unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
    let mut nodes = Vec::new();
    for id in ["n0", "n1"] {
        // A node's certificate names its member id, which is what peers check.
        let cert = ca.issue(&[id]).unwrap();
        let (cert_file, key_file) = (dir.path().join(id), dir.path().join(format!("{id}-key")));
        std::fs::write(&cert_file, &cert.cert).unwrap();
        std::fs::write(&key_file, &cert.key).unwrap();
        let flags: Vec<String> = [
            "--tls-cert".into(),
            cert_file.display().to_string(),
            "--tls-key".into(),
            key_file.display().to_string(),
            "--tls-ca".into(),
            dir.path().join("ca.pem").display().to_string(),
        ]
        .into();
        nodes.push(ServeNode::spawn_with(
            &etcd.endpoint(),
            PREFIX,
            id,
            1,
            &flags,
            &[],
        ));
    }
    for n in &mut nodes {
        let url = n.url.clone();
        n.proc.until_healthy(&url).await;
    }

    // n2: another CA's certificate, naming n2. n3: the cluster CA's, naming n1.
    let (foreign_addr, foreign) =
        listen(&Ca::new("other CA").unwrap().issue(&["n2"]).unwrap()).await;
    let (stolen_addr, stolen) = listen(&ca.issue(&["n1"]).unwrap()).await;
    let etcd_client = etcd.coordinator().await;
    for (id, addr) in [("n2", &foreign_addr), ("n3", &stolen_addr)] {
        // Heavy weights: most keys are theirs.
        let record = format!(r#"{{"addr":"{addr}","weight":50,"incarnation":1}}"#);
        etcd_client
            .put(&format!("{PREFIX}{id}"), record.into_bytes(), 0)
            .await
            .unwrap();
    }
    let want = ["n0", "n1", "n2", "n3"];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for n in &nodes {
        loop {
            let ring = n.ring().await.unwrap_or_default();
            if ring.iter().map(|(id, _)| id.as_str()).eq(want) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never saw the forged records: {ring:?}",
                n.id
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Every key is answered with the source's value, through both nodes.
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    for n in &nodes {
        for key in &keys {
            let (status, body) = n.get(key).await.unwrap();
            assert_eq!(status, 200, "{} {key}: {body}", n.id);
            assert!(body.starts_with(&format!("value of {key} (")), "{body}");
        }
        let ring = json(&format!("{}/v1/ring", n.url)).await.unwrap();
        assert!(ring["members"].as_array().unwrap().len() == 4, "{ring}");
    }
    let weights = [("n0", 1), ("n1", 1), ("n2", 50), ("n3", 50)];
    let members = weights.map(|(id, w)| peercache::Member::new(id, "").with_weight(w));
    let ring = peercache::Ring::new(members, peercache::ring::DEFAULT_VNODES);
    let forged_owned = (keys.iter())
        .filter(|k| matches!(ring.owner(k).map(|m| m.id.as_str()), Some("n2" | "n3")))
        .count() as u64;
    assert!(
        forged_owned > 50,
        "the forged members own {forged_owned} of 100 keys"
    );

    // Both listeners were dialled, but no handshake completed and no request arrived.
    for (what, seen) in [("another CA's", &foreign), ("a misnamed", &stolen)] {
        assert!(
            seen.connections.load(Ordering::Relaxed) > 0,
            "the member with {what} certificate was never dialled"
        );
        assert_eq!(
            seen.handshakes.load(Ordering::Relaxed),
            0,
            "{what} certificate"
        );
        assert_eq!(seen.bytes.load(Ordering::Relaxed), 0, "{what} certificate");
    }
    let mut loads = 0;
    for n in &nodes {
        let refused = metric(
            &n.url,
            r#"peercache_tls_handshakes_refused_total{port="grpc",side="connect"}"#,
        )
        .await
        .unwrap_or_default();
        assert!(refused > 0, "{} counted no refused dial", n.id);
        loads += n.stat("loads").await;
    }
    // The keys the forged members own were loaded by the real members (the one that
    // asked, or the other one it turned to), not elsewhere.
    assert!(loads >= forged_owned, "{loads} loads");
}
