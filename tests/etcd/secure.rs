//! A secured etcd: over TLS with client-certificate authentication, and with a user
//! and password. Right credentials get in, every wrong kind is refused, and `peercache
//! serve` joins with its flags; its start-up errors name what is missing.

use std::process::{Command, Stdio};
use std::time::Duration;

use etcd_client::Permission;
use peercache::Error;
use peercache::discovery::{Coordinator, EtcdConfig, EtcdCoordinator, EtcdTls, EtcdUser};
use tokio::time::Instant;

use crate::ONE_AT_A_TIME;
use crate::certs::Pki;
use crate::nodes::{ServeNode, rings_become};
use crate::server::EtcdServer;

/// The user the tests create, allowed to read and write keys under [`PREFIX`] only.
const USER: &str = "cache";
const PASSWORD: &str = "s3cret pass";
const PREFIX: &str = "/peercache/";

/// A read of `/peercache/` by a client with `config`: the error it fails with.
async fn refusal(etcd: &EtcdServer, config: EtcdConfig) -> Error {
    let c = EtcdCoordinator::connect(&[etcd.endpoint()], config)
        .await
        .expect("nothing is dialled before the first call");
    match c.range(PREFIX).await {
        Ok(read) => panic!("read {read:?}, expected a refusal"),
        Err(e) => e,
    }
}

/// A put and a read of it through `c`.
async fn round_trip(c: &EtcdCoordinator, key: &str) {
    c.put(key, b"v".to_vec(), 0).await.unwrap();
    let (kvs, _) = c.range(key).await.unwrap();
    assert_eq!((kvs.len(), &kvs[0].value[..]), (1, &b"v"[..]));
}

/// Over TLS, the client certificate etcd's CA signed gets in. No certificate and one
/// from another CA are refused by etcd; a client not trusting etcd's CA refuses etcd.
/// Each refusal reads as an etcd out of reach (`Unavailable`): waited out, not fatal.
#[tokio::test]
async fn tls_lets_in_a_client_certificate_of_its_ca_only() {
    let etcd = EtcdServer::start_tls().await;
    let tls = etcd.tls().unwrap();
    round_trip(&etcd.coordinator().await, "/peercache/tls/k").await;
    let ca = std::fs::read(tls.pki.ca_file()).unwrap();

    let anonymous = EtcdConfig {
        tls: Some(EtcdTls::new(ca.clone())),
        ..EtcdConfig::default()
    };
    let other = Pki::new("other");
    let stranger = other.client("stranger");
    let foreign = EtcdConfig {
        tls: Some(EtcdTls::new(ca).with_identity(
            std::fs::read(stranger.cert).unwrap(),
            std::fs::read(stranger.key).unwrap(),
        )),
        ..EtcdConfig::default()
    };
    let distrustful = EtcdConfig {
        tls: Some(tls.client.tls(&other)),
        ..EtcdConfig::default()
    };
    for (who, config) in [
        ("no client certificate", anonymous),
        ("another CA's certificate", foreign),
        ("not trusting etcd's CA", distrustful),
    ] {
        let refused = refusal(&etcd, config).await;
        println!("etcd over TLS, {who}: {refused}");
        assert!(
            matches!(refused, Error::Unavailable(_)),
            "{who}: {refused:?}"
        );
        // Only the client's own check names its reason; etcd's refusal reaches the
        // client as an alert or a closed connection, depending on timing.
        if who.starts_with("not trusting") {
            assert!(refused.to_string().contains("UnknownIssuer"), "{refused}");
        }
    }
    // And plain HTTP/2 to its TLS port is not served.
    let plain = format!("http://{}", etcd.endpoint().trim_start_matches("https://"));
    let c = EtcdCoordinator::connect(&[plain], EtcdConfig::default())
        .await
        .unwrap();
    assert!(c.range(PREFIX).await.is_err());
}

/// `peercache serve --etcd https://… --etcd-ca --etcd-cert --etcd-key`: two nodes join
/// through a TLS etcd and see each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_through_etcd_over_tls() {
    let _one = ONE_AT_A_TIME.lock().await;
    let etcd = EtcdServer::start_tls().await;
    let tls = etcd.tls().unwrap();
    let flags = [
        "--etcd-ca".to_owned(),
        tls.pki.ca_file().display().to_string(),
        "--etcd-cert".to_owned(),
        tls.client.cert.display().to_string(),
        "--etcd-key".to_owned(),
        tls.client.key.display().to_string(),
    ];
    let prefix = "/peercache/tls-join/";
    let nodes: Vec<ServeNode> = (0..2)
        .map(|i| ServeNode::spawn_with(&etcd.endpoint(), prefix, &format!("n{i}"), 1, &flags, &[]))
        .collect();
    let all: Vec<&ServeNode> = nodes.iter().collect();
    rings_become(&all, &all, Instant::now(), Duration::from_secs(5)).await;
    let (kvs, _) = etcd.coordinator().await.range(prefix).await.unwrap();
    assert_eq!(kvs.len(), 2);
}

/// Turns on etcd's authentication: a root user, and user [`USER`] with a role that may
/// read and write under [`PREFIX`].
async fn enable_auth(etcd: &EtcdServer) {
    let mut c = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    c.user_add("root", "root password", None).await.unwrap();
    c.user_grant_role("root", "root").await.unwrap();
    c.role_add("peercache").await.unwrap();
    let permission = Permission::read_write(PREFIX).with_prefix();
    c.role_grant_permission("peercache", permission)
        .await
        .unwrap();
    c.user_add(USER, PASSWORD, None).await.unwrap();
    c.user_grant_role(USER, "peercache").await.unwrap();
    c.auth_enable().await.unwrap();
}

fn as_user(password: &str) -> EtcdConfig {
    EtcdConfig {
        user: Some(EtcdUser::new(USER, password)),
        ..EtcdConfig::default()
    }
}

/// With authentication on, the user with its password reads and writes under its
/// prefix; a wrong password, no user at all, and a key outside its prefix are each
/// refused as a configuration error (which ends a node's start-up instead of being
/// retried).
#[tokio::test]
async fn a_password_protected_etcd_lets_in_its_user_only() {
    let etcd = EtcdServer::start().await;
    enable_auth(&etcd).await;
    let c = EtcdCoordinator::connect(&[etcd.endpoint()], as_user(PASSWORD))
        .await
        .unwrap();
    round_trip(&c, "/peercache/auth/k").await;
    let outside = c.put("/elsewhere/k", b"v".to_vec(), 0).await.unwrap_err();
    assert!(
        matches!(&outside, Error::Config(why) if why.contains("permission denied")),
        "{outside:?}"
    );
    for (who, config, says) in [
        (
            "a wrong password",
            as_user("wrong"),
            "authentication failed",
        ),
        ("no user", EtcdConfig::default(), "user name is empty"),
    ] {
        let refused = refusal(&etcd, config).await;
        println!("etcd with auth, {who}: {refused}");
        assert!(
            matches!(&refused, Error::Config(why) if why.contains(says)),
            "{who}: {refused:?}"
        );
    }
}

/// `peercache serve --etcd-user`: one node with the password in PEERCACHE_ETCD_PASSWORD,
/// one with it in --etcd-password-file, join and see each other; one with a wrong
/// password stops at start-up saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_with_a_user_and_password() {
    let _one = ONE_AT_A_TIME.lock().await;
    let etcd = EtcdServer::start().await;
    enable_auth(&etcd).await;
    let dir = crate::common::process::TempDir::new("etcd-password");
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let user = ["--etcd-user".to_owned(), USER.to_owned()];
    let with_file = [
        &user[..],
        &[
            "--etcd-password-file".to_owned(),
            file.display().to_string(),
        ],
    ]
    .concat();
    let prefix = "/peercache/auth-join/";
    let env = [("PEERCACHE_ETCD_PASSWORD", PASSWORD)];
    let nodes = [
        ServeNode::spawn_with(&etcd.endpoint(), prefix, "n0", 1, &user, &env),
        ServeNode::spawn_with(&etcd.endpoint(), prefix, "n1", 1, &with_file, &[]),
    ];
    let all: Vec<&ServeNode> = nodes.iter().collect();
    rings_become(&all, &all, Instant::now(), Duration::from_secs(5)).await;

    let wrong = [("PEERCACHE_ETCD_PASSWORD", "wrong")];
    let mut refused = ServeNode::spawn_with(&etcd.endpoint(), prefix, "n2", 1, &user, &wrong);
    let exit = refused.proc.exited_within(Duration::from_secs(10)).await;
    assert!(!exit.success());
    let log = refused.log();
    assert!(log.contains("authentication failed"), "{log}");
}

/// `peercache serve` with incomplete etcd credentials exits at once, naming what is
/// missing; no etcd is needed to tell.
#[test]
fn incomplete_etcd_credentials_are_start_up_errors() {
    let dir = crate::common::process::TempDir::new("etcd-flags");
    let missing = dir.path().join("missing.pem");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let missing = missing.display().to_string();
    let not_pem = not_pem.display().to_string();
    let https = "https://127.0.0.1:1";
    let cases: [(&[&str], &str); 7] = [
        (&["--etcd", https], "an https endpoint needs --etcd-ca"),
        (
            &["--etcd", https, "--etcd-ca", &missing],
            "reading --etcd-ca",
        ),
        (
            &["--etcd", https, "--etcd-ca", &not_pem],
            "holds no PEM CERTIFICATE",
        ),
        (
            &[
                "--etcd",
                https,
                "--etcd-ca",
                &not_pem,
                "--etcd-cert",
                &not_pem,
            ],
            "--etcd-key",
        ),
        (
            &["--etcd", "http://127.0.0.1:1", "--etcd-ca", &not_pem],
            "are for https:// etcd endpoints",
        ),
        (
            &["--etcd", "http://127.0.0.1:1", "--etcd-user", "u"],
            "--etcd-user needs a password",
        ),
        (
            &[
                "--etcd",
                "http://127.0.0.1:1",
                "--etcd-user",
                "u",
                "--etcd-password-file",
                &missing,
            ],
            "reading --etcd-password-file",
        ),
    ];
    for (args, says) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_peercache"))
            // Addresses never bound: the flags are read first.
            .args([
                "serve",
                "--group",
                "g",
                "--grpc-addr",
                "127.0.0.1:7",
                "--http-addr",
                "127.0.0.1:7",
            ])
            .args(args)
            .env_remove("PEERCACHE_ETCD_PASSWORD")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
