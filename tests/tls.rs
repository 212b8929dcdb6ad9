//! Mutual TLS between peers and HTTPS for clients, with real `peercache serve`
//! processes on loopback: a cluster with mTLS serves as one without; the peer port
//! refuses a client without a certificate, with one from another CA and with an expired
//! one (each a handshake error); a member whose certificate does not name it is not sent
//! requests; certificates are reloaded on SIGHUP; `peercache certs` makes a working set.
//!
//! Certificates are made here (rcgen), valid for years: rustls checks them against the
//! real clock.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use peercache::Member;
use peercache::net::{ChannelTimeouts, TokioNet};
use peercache::peer::{PeerFailure, Unobserved};
use peercache::tls::certs::{Ca, NodeCert};
use peercache::tls::{Tls, TlsPem};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

mod common;

use common::metric;
use common::process::{Proc, TempDir, free_ports};

/// A node's TLS files, written into a test's directory.
struct Files {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

fn write(dir: &TempDir, name: &str, ca: &Ca, node: &NodeCert) -> Files {
    let files = Files {
        cert: dir.path().join(format!("{name}.pem")),
        key: dir.path().join(format!("{name}-key.pem")),
        ca: dir.path().join(format!("{name}-ca.pem")),
    };
    std::fs::write(&files.cert, &node.cert).unwrap();
    std::fs::write(&files.key, &node.key).unwrap();
    std::fs::write(&files.ca, ca.cert_pem()).unwrap();
    files
}

/// A `peercache serve` process with the demo source and peer TLS from `files`.
struct Served {
    proc: Proc,
    grpc: String,
    http: String,
}

fn serve(grpc: &str, http: u16, peers: &str, files: &Files, extra: &[&str]) -> Served {
    let child = Command::new(env!("CARGO_BIN_EXE_peercache"))
        .args([
            "serve",
            "--grpc-addr",
            grpc,
            "--peers",
            peers,
            "--group",
            "g:1MiB",
        ])
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key)
        .arg("--tls-ca")
        .arg(&files.ca)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("the peercache binary runs");
    Served {
        proc: Proc::new(format!("peercache serve {grpc}"), child),
        grpc: grpc.to_owned(),
        http: format!("http://127.0.0.1:{http}"),
    }
}

async fn json(url: &str) -> serde_json::Value {
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    serde_json::from_str(&text).unwrap()
}

const REFUSED_ACCEPT: &str = r#"peercache_tls_handshakes_refused_total{port="grpc",side="accept"}"#;
const REFUSED_CONNECT: &str =
    r#"peercache_tls_handshakes_refused_total{port="grpc",side="connect"}"#;

/// Loads across `nodes`, by their stats.
async fn loads(nodes: &[Served]) -> u64 {
    let mut total = 0;
    for n in nodes {
        let stats = json(&format!("{}/v1/stats", n.http)).await;
        total += stats["groups"]["g"]["loads"].as_u64().unwrap();
    }
    total
}

/// Three nodes with mutual TLS: every key is loaded once cluster-wide (the owner's
/// peers reach it over TLS), a write through one node is read through the others, and
/// no handshake was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_mutual_tls_serves_and_replicates() {
    let dir = TempDir::new("tls-cluster");
    let ca = Ca::new("test CA").unwrap();
    let ports = free_ports::<6>();
    let grpc: Vec<String> = ports[..3]
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let peers = grpc.join(",");
    let mut nodes = Vec::new();
    for (i, addr) in grpc.iter().enumerate() {
        let files = write(
            &dir,
            &format!("n{i}"),
            &ca,
            &ca.issue(&["127.0.0.1"]).unwrap(),
        );
        nodes.push(serve(addr, ports[3 + i], &peers, &files, &[]));
    }
    for n in &mut nodes {
        let url = n.http.clone();
        n.proc.until_healthy(&url).await;
    }
    let keys: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
    for n in &nodes {
        for key in &keys {
            let url = format!("{}/v1/groups/g/keys/{key}", n.http);
            let r = reqwest::get(&url).await.unwrap();
            assert_eq!(r.status(), 200, "{url}");
            let text = r.text().await.unwrap();
            assert!(
                text.starts_with(&format!("value of {key} (")),
                "{url}: {text}"
            );
        }
    }
    assert_eq!(
        loads(&nodes).await,
        keys.len() as u64,
        "each key loaded by its owner only"
    );
    let client = reqwest::Client::new();
    let put = client
        .put(format!("{}/v1/groups/g/keys/k1", nodes[0].http))
        .body("written")
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    for n in &nodes {
        let got = reqwest::get(format!("{}/v1/groups/g/keys/k1", n.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(got, "written", "{}", n.grpc);
    }
    for n in &nodes {
        assert_eq!(metric(&n.http, REFUSED_ACCEPT).await, Some(0), "{}", n.grpc);
        assert_eq!(
            metric(&n.http, REFUSED_CONNECT).await,
            Some(0),
            "{}",
            n.grpc
        );
    }
}

/// A client configuration trusting `ca`, presenting `cert` if given.
fn client_config(ca: &Ca, cert: Option<&NodeCert>) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    match cert {
        None => builder.with_no_client_auth(),
        Some(c) => {
            let chain = CertificateDer::pem_slice_iter(c.cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(c.key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    }
}

/// Shakes hands with `addr` and reads the server's first bytes (HTTP/2 settings once
/// the client's preface is in): `Ok` if any arrive, else the error. With TLS 1.3 the
/// server judges the client's certificate after the client has finished, so a refusal
/// shows as the alert the server sends on the first read.
async fn shake(addr: &str, config: rustls::ClientConfig) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let exchange = async {
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await?;
        tls.flush().await?;
        let mut buf = [0u8; 64];
        match tls.read(&mut buf).await? {
            0 => Err(std::io::Error::other("closed without a word")),
            _ => Ok(()),
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), exchange).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("no answer within 5 s".into()),
    }
}

/// A single node with mTLS, for the refusal tests.
async fn single(dir: &TempDir, ca: &Ca) -> Served {
    let [grpc, http] = free_ports::<2>();
    let grpc = format!("127.0.0.1:{grpc}");
    let files = write(dir, "node", ca, &ca.issue(&["127.0.0.1"]).unwrap());
    let mut node = serve(&grpc, http, &grpc, &files, &[]);
    let url = node.http.clone();
    node.proc.until_healthy(&url).await;
    node
}

/// The peer port refuses, at the handshake, a client without a certificate, one whose
/// certificate another CA signed, and one whose certificate has expired; each refusal
/// is counted. A client with a valid certificate gets answers through the peer protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_port_refuses_clients_without_a_valid_certificate() {
    let dir = TempDir::new("tls-refuse");
    let ca = Ca::new("cluster CA").unwrap();
    let node = single(&dir, &ca).await;

    let none = shake(&node.grpc, client_config(&ca, None))
        .await
        .unwrap_err();
    assert!(
        none.contains("CertificateRequired"),
        "no certificate: {none}"
    );
    let other_ca = Ca::new("other CA").unwrap();
    let foreign = other_ca.issue(&["127.0.0.1"]).unwrap();
    let foreign = shake(&node.grpc, client_config(&ca, Some(&foreign)))
        .await
        .unwrap_err();
    assert!(
        foreign.contains("UnknownCA") || foreign.contains("BadCertificate"),
        "another CA's certificate: {foreign}"
    );
    let expired = ca.issue_for_days(&["127.0.0.1"], -30, 10).unwrap();
    let expired = shake(&node.grpc, client_config(&ca, Some(&expired)))
        .await
        .unwrap_err();
    assert!(
        expired.contains("CertificateExpired"),
        "an expired certificate: {expired}"
    );
    // Plaintext gRPC: not even a handshake. The server reads the HTTP/2 preface as a
    // malformed TLS record and answers with a TLS alert (record type 0x15) or closes;
    // it never speaks HTTP/2 to it.
    let mut plain = tokio::net::TcpStream::connect(&node.grpc).await.unwrap();
    plain
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), plain.read(&mut buf)).await;
    match read {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => assert_eq!(
            buf[0],
            0x15,
            "plaintext got a non-alert answer: {:?}",
            &buf[..n]
        ),
        Err(_) => panic!("plaintext got no answer nor a close within 5 s"),
    }
    assert_eq!(metric(&node.http, REFUSED_ACCEPT).await, Some(4));
    let stats = json(&format!("{}/v1/stats", node.http)).await;
    assert_eq!(stats["tls"]["grpc"]["refused_accept"], 4, "{stats}");

    // The control: a valid certificate, shaking hands and calling through the client
    // peers use.
    let good = ca.issue(&["127.0.0.1"]).unwrap();
    shake(&node.grpc, client_config(&ca, Some(&good)))
        .await
        .expect("a valid certificate is served");
    let tls = Tls::mutual_pem(TlsPem {
        cert: good.cert,
        key: good.key,
        ca: Some(ca.cert_pem()),
    })
    .unwrap();
    let connect = peercache::grpc::connector(
        TokioNet,
        ChannelTimeouts::default(),
        Some(Arc::new(tls)),
        1 << 20,
        peercache::grpc::Coalescing::default(),
        Arc::new(Unobserved),
    );
    let peer = connect(&Member::new(&node.grpc, &node.grpc)).unwrap();
    let got = peer.get("g", "k", Duration::from_secs(5)).await.unwrap();
    assert!(got.value.starts_with(b"value of k ("), "{:?}", got.value);
    assert_eq!(metric(&node.http, REFUSED_ACCEPT).await, Some(4));
}

/// A node dialling a member checks that the certificate it is shown names that member:
/// a peer whose certificate names another host is sent no request (the node loads the
/// key itself), and the refusal is counted on the dialling side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_certificate_names_another_host_is_not_sent_requests() {
    let dir = TempDir::new("tls-impostor");
    let ca = Ca::new("cluster CA").unwrap();
    let node = single(&dir, &ca).await;
    // The client side of the peer protocol, told the member at the node's address is
    // "node7": the node's certificate names 127.0.0.1, so it is not node7.
    let me = ca.issue(&["127.0.0.1"]).unwrap();
    let tls = Arc::new(
        Tls::mutual_pem(TlsPem {
            cert: me.cert,
            key: me.key,
            ca: Some(ca.cert_pem()),
        })
        .unwrap(),
    );
    let connect = peercache::grpc::connector(
        TokioNet,
        ChannelTimeouts::default(),
        Some(tls.clone()),
        1 << 20,
        peercache::grpc::Coalescing::default(),
        Arc::new(Unobserved),
    );
    let impostor = connect(&Member::new("node7", &node.grpc)).unwrap();
    let got = impostor.get("g", "k", Duration::from_secs(3)).await;
    assert!(
        matches!(got, Err(PeerFailure::Unreachable(_))),
        "a certificate for another name was accepted: {got:?}"
    );
    assert!(tls.counters().refused_outgoing() >= 1);
    let stats = json(&format!("{}/v1/stats", node.http)).await;
    assert_eq!(
        stats["groups"]["g"]["loads"], 0,
        "the node served nothing: {stats}"
    );
}

/// SIGHUP reloads the certificate, key and CA: after the files are replaced by another
/// CA's set, clients of the old CA are refused and clients of the new one served,
/// without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_reloaded_on_sighup() {
    let dir = TempDir::new("tls-reload");
    let old = Ca::new("old CA").unwrap();
    let mut node = single(&dir, &old).await;
    let old_client = old.issue(&["127.0.0.1"]).unwrap();
    shake(&node.grpc, client_config(&old, Some(&old_client)))
        .await
        .expect("served before the rotation");

    let new = Ca::new("new CA").unwrap();
    write(&dir, "node", &new, &new.issue(&["127.0.0.1"]).unwrap());
    let status = Command::new("kill")
        .args(["-HUP", &node.proc.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let reloads = r#"peercache_tls_reloads_total{port="grpc"}"#;
    let mut waited = 0;
    while metric(&node.http, reloads).await != Some(1) {
        assert!(waited < 250, "no reload within 5 s");
        waited += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.proc.assert_running();
    let refused = shake(&node.grpc, client_config(&old, Some(&old_client)))
        .await
        .unwrap_err();
    // The old client no longer trusts the server's certificate, nor the server its.
    assert!(
        refused.contains("UnknownIssuer") || refused.contains("UnknownCA"),
        "{refused}"
    );
    let new_client = new.issue(&["127.0.0.1"]).unwrap();
    shake(&node.grpc, client_config(&new, Some(&new_client)))
        .await
        .expect("served after the rotation");

    // A reload that fails keeps the material in use.
    std::fs::write(dir.path().join("node-key.pem"), "not a key").unwrap();
    Command::new("kill")
        .args(["-HUP", &node.proc.child.id().to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.proc.assert_running();
    assert_eq!(metric(&node.http, reloads).await, Some(1));
    shake(&node.grpc, client_config(&new, Some(&new_client)))
        .await
        .expect("still served after a failed reload");
}

/// HTTPS on the client API, and `peercache certs` making a CA and a node certificate
/// that a node starts with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certs_made_by_the_binary_serve_mutual_tls_and_https() {
    let dir = TempDir::new("tls-certs");
    let made = Command::new(env!("CARGO_BIN_EXE_peercache"))
        .args(["certs", "--node", "127.0.0.1+localhost", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let path = |name: &str| dir.path().join(name);
    let files = Files {
        cert: path("127.0.0.1.pem"),
        key: path("127.0.0.1-key.pem"),
        ca: path("ca.pem"),
    };
    let [grpc, http] = free_ports::<2>();
    let grpc = format!("127.0.0.1:{grpc}");
    let cert = files.cert.to_str().unwrap().to_owned();
    let key = files.key.to_str().unwrap().to_owned();
    let node = serve(
        &grpc,
        http,
        &grpc,
        &files,
        &["--http-tls-cert", &cert, "--http-tls-key", &key],
    );
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&files.ca).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let url = format!("https://localhost:{http}");
    let mut answered = None;
    for _ in 0..250 {
        if let Ok(r) = client.get(format!("{url}/v1/groups/g/keys/x")).send().await {
            answered = Some((r.status().as_u16(), r.text().await.unwrap()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = answered.expect("the HTTPS port answers");
    assert_eq!(status, 200);
    assert!(body.starts_with("value of x ("), "{body}");
    // Plain HTTP to the HTTPS port gets no answer.
    let plain = reqwest::get(format!("http://127.0.0.1:{http}/healthz")).await;
    assert!(plain.is_err(), "{plain:?}");
    drop(node);
}
