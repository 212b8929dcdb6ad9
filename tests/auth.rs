//! `peercache serve --auth-file`: bearer tokens with roles over real HTTP to a real
//! process. Each role may do exactly its share; a missing or wrong token is 401 with
//! `WWW-Authenticate`, the same answer whatever the route, group or key; a known token
//! of a lesser role is 403; `/healthz` is open, `/metrics` unless `--auth-metrics`; a bad
//! token file stops the start, naming its line.

use reqwest::{Client, Method, header};
use serde_json::Value;

mod common;

use common::process::{Proc, TempDir, free_port};

const READ: &str = "reader-0123456789abcdef";
const WRITE: &str = "writer-0123456789abcdef";
const ADMIN: &str = "admin-0123456789abcdef";

/// A token file giving each of the three roles one token.
fn token_file(dir: &TempDir) -> String {
    let path = dir.path().join("tokens");
    let text =
        format!("# test clients\nread {READ}\n\nwrite {WRITE}\n  # the operator\nadmin {ADMIN}\n");
    std::fs::write(&path, text).unwrap();
    // Private, as serve warns otherwise.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path.display().to_string()
}

/// `peercache serve` of a pure cache (group `g`) with the tokens of `dir`, and `extra`.
async fn start(dir: &TempDir, extra: &[&str]) -> (Proc, String) {
    let grpc = format!("127.0.0.1:{}", free_port());
    let file = token_file(dir);
    let args = ["--group", "g", "--source", "none", "--grpc-addr", &grpc];
    common::start_serve(&[&args[..], &["--auth-file", &file], extra].concat()).await
}

/// A request's status, `WWW-Authenticate` header and body.
struct Answer {
    status: u16,
    challenge: Option<String>,
    body: String,
}

async fn call(method: Method, url: &str, token: Option<&str>) -> Answer {
    let mut req = Client::new().request(method.clone(), url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if method == Method::PUT {
        req = req.body("a value");
    }
    let r = req.send().await.expect("request sent");
    Answer {
        status: r.status().as_u16(),
        challenge: r
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned()),
        body: r.text().await.unwrap(),
    }
}

async fn status(method: Method, url: &str, token: Option<&str>) -> u16 {
    call(method, url, token).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_may_do_exactly_its_share() {
    let dir = TempDir::new("auth-roles");
    let (_node, url) = start(&dir, &[]).await;
    let key = |k: &str| format!("{url}/v1/groups/g/keys/{k}");
    let api = format!("{url}/api?group=g&key=k");
    let (stats, ring) = (format!("{url}/v1/stats"), format!("{url}/v1/ring"));
    use Method as M;

    // read: gets only.
    assert_eq!(status(M::PUT, &key("k"), Some(READ)).await, 403);
    assert_eq!(status(M::GET, &key("k"), Some(READ)).await, 404);
    assert_eq!(status(M::PUT, &key("k"), Some(WRITE)).await, 200);
    assert_eq!(status(M::GET, &key("k"), Some(READ)).await, 200);
    assert_eq!(status(M::GET, &api, Some(READ)).await, 200);
    assert_eq!(status(M::DELETE, &key("k"), Some(READ)).await, 403);
    assert_eq!(status(M::GET, &stats, Some(READ)).await, 403);
    assert_eq!(status(M::GET, &ring, Some(READ)).await, 403);

    // write: gets, sets and removals; no node-wide views.
    assert_eq!(status(M::GET, &key("k"), Some(WRITE)).await, 200);
    assert_eq!(status(M::DELETE, &key("k"), Some(WRITE)).await, 200);
    assert_eq!(status(M::GET, &key("k"), Some(WRITE)).await, 404);
    assert_eq!(status(M::GET, &stats, Some(WRITE)).await, 403);
    assert_eq!(status(M::GET, &ring, Some(WRITE)).await, 403);

    // admin: everything.
    assert_eq!(status(M::PUT, &key("k"), Some(ADMIN)).await, 200);
    assert_eq!(status(M::GET, &key("k"), Some(ADMIN)).await, 200);
    assert_eq!(status(M::GET, &api, Some(ADMIN)).await, 200);
    assert_eq!(status(M::DELETE, &key("k"), Some(ADMIN)).await, 200);
    assert_eq!(status(M::GET, &ring, Some(ADMIN)).await, 200);
    assert_eq!(
        status(M::GET, &format!("{url}/metrics"), Some(ADMIN)).await,
        200
    );

    // A refusal of a known token is 403 in the API's JSON shape, without a challenge.
    let forbidden = call(M::PUT, &key("k"), Some(READ)).await;
    let body: Value = serde_json::from_str(&forbidden.body).unwrap();
    assert!(body["error"].as_str().unwrap().contains("write"), "{body}");
    assert_eq!(forbidden.challenge, None);

    // Refusals so far: 7 forbidden (the 403s above, this last one included), none
    // unauthorized; /v1/stats counts them.
    let answer = call(M::GET, &stats, Some(ADMIN)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let stats: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(stats["auth_refusals"]["forbidden"], 7, "{stats}");
    assert_eq!(stats["auth_refusals"]["unauthorized"], 0, "{stats}");
    assert!(stats["groups"]["g"].is_object(), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_token_is_401_and_tells_nothing_of_what_exists() {
    let dir = TempDir::new("auth-unknown");
    let (_node, url) = start(&dir, &[]).await;
    let existing = format!("{url}/v1/groups/g/keys/here");
    assert_eq!(status(Method::PUT, &existing, Some(WRITE)).await, 200);
    let missing = format!("{url}/v1/groups/g/keys/absent");
    let no_group = format!("{url}/v1/groups/nope/keys/here");
    let no_route = format!("{url}/v2/anything");
    // With a valid token the four differ (200, 404 not found, 404 unknown group, 404
    // no such route)...
    let mut valid = Vec::new();
    for u in [&existing, &missing, &no_group, &no_route] {
        let a = call(Method::GET, u, Some(ADMIN)).await;
        valid.push((a.status, a.body));
    }
    assert_eq!(valid[0], (200, "a value".to_owned()));
    assert!(valid[1..].iter().all(|(s, _)| *s == 404), "{valid:?}");
    assert_eq!(
        valid.len(),
        valid
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        "{valid:?}"
    );

    // ...without one, or with a wrong one, they are alike: 401, a challenge, JSON.
    let wrong = "not-a-token-0123456789abcdef";
    for (token, message) in [
        (None, "a bearer token is required"),
        (Some(wrong), "the bearer token is not valid"),
        (
            Some(&READ[..READ.len() - 1]),
            "the bearer token is not valid",
        ),
    ] {
        for (method, u) in [
            (Method::GET, &existing),
            (Method::GET, &missing),
            (Method::GET, &no_group),
            (Method::GET, &no_route),
            (Method::PUT, &existing),
            (Method::DELETE, &existing),
            (Method::DELETE, &no_group),
            (Method::GET, &format!("{url}/v1/stats")),
        ] {
            let a = call(method.clone(), u, token).await;
            assert_eq!(a.status, 401, "{method} {u} with {token:?}: {}", a.body);
            let challenge = a.challenge.unwrap_or_default();
            assert!(challenge.starts_with("Bearer"), "{challenge:?}");
            let body: Value = serde_json::from_str(&a.body).unwrap();
            assert_eq!(body, serde_json::json!({ "error": message }));
        }
    }
    // Another scheme is a wrong token.
    let basic = Client::new()
        .get(&existing)
        .basic_auth("user", Some(ADMIN))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status().as_u16(), 401);

    // The key is still there: refused writes did nothing.
    let a = call(Method::GET, &existing, Some(READ)).await;
    assert_eq!((a.status, a.body.as_str()), (200, "a value"));
    // Health stays open; so do metrics without --auth-metrics, where refusals show.
    assert_eq!(
        status(Method::GET, &format!("{url}/healthz"), None).await,
        200
    );
    let metrics = call(Method::GET, &format!("{url}/metrics"), None).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .body
            .contains("peercache_http_auth_refusals_total{reason=\"unauthorized\"} 25"),
        "{}",
        metrics.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_metrics_puts_metrics_behind_an_admin_token() {
    let dir = TempDir::new("auth-metrics");
    let (_node, url) = start(&dir, &["--auth-metrics"]).await;
    let metrics = format!("{url}/metrics");
    let refused = call(Method::GET, &metrics, None).await;
    assert_eq!(refused.status, 401);
    assert!(refused.challenge.is_some());
    assert_eq!(status(Method::GET, &metrics, Some(WRITE)).await, 403);
    let scraped = call(Method::GET, &metrics, Some(ADMIN)).await;
    assert_eq!(scraped.status, 200);
    assert!(
        scraped
            .body
            .contains("peercache_http_auth_refusals_total{reason=\"forbidden\"} 1"),
        "{}",
        scraped.body
    );
    assert_eq!(
        status(Method::GET, &format!("{url}/healthz"), None).await,
        200
    );
}

/// `peercache serve` with the token file `text`: its stderr once it has exited with a
/// failure (within 10 s).
async fn refused_file(text: &str) -> String {
    let dir = TempDir::new("auth-bad");
    let path = dir.path().join("tokens");
    std::fs::write(&path, text).unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let file = path.display().to_string();
    let args = ["--group", "g", "--grpc-addr", &grpc, "--auth-file", &file].map(String::from);
    let err = common::serve_refused(&args)
        .await
        .unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert!(err.contains(&file), "{err}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_file_stops_serve_naming_the_line() {
    let cases = [
        (
            format!("read {READ}\nwrite\n"),
            "line 2: expected `ROLE TOKEN`",
        ),
        (
            format!("read {READ}\nroot {ADMIN}\n"),
            "line 2: unknown role \"root\"",
        ),
        (
            "\n\nadmin short-token\n".to_owned(),
            "line 3: the token is 11 bytes",
        ),
        (
            format!("read {READ}\nadmin {READ}\n"),
            "line 2: the same token as line 1",
        ),
    ];
    let errs = futures::future::join_all(cases.iter().map(|(text, _)| refused_file(text))).await;
    for ((text, wanted), err) in cases.iter().zip(errs) {
        assert!(err.contains(wanted), "{text:?}: {err}");
        assert!(!err.contains(READ), "the error shows a token: {err}");
    }
    let grpc = format!("127.0.0.1:{}", free_port());
    let args = ["--group", "g", "--grpc-addr", &grpc, "--auth-metrics"].map(String::from);
    let alone = common::serve_refused(&args).await.unwrap();
    assert!(
        alone.contains("--auth-metrics needs --auth-file"),
        "{alone}"
    );
}

/// SIGHUP reads the token file again: a token taken out is refused from then on and a
/// new one is let in, without a restart; a file that no longer parses leaves the tokens
/// in force as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_reloaded_on_sighup() {
    let dir = TempDir::new("auth-reload");
    let (proc, url) = start(&dir, &[]).await;
    let stats = format!("{url}/v1/stats");
    assert_eq!(call(Method::GET, &stats, Some(ADMIN)).await.status, 200);
    let hangup = || {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &proc.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    // Waits (up to 5 s) until `token` gets `status` from /v1/stats.
    let until = |token: &'static str, status: u16| {
        let stats = stats.clone();
        async move {
            for _ in 0..250 {
                if call(Method::GET, &stats, Some(token)).await.status == status {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            panic!("{token} never got {status}");
        }
    };
    const NEW_ADMIN: &str = "rotated-admin-0123456789";
    std::fs::write(dir.path().join("tokens"), format!("admin {NEW_ADMIN}\n")).unwrap();
    hangup();
    until(NEW_ADMIN, 200).await;
    assert_eq!(call(Method::GET, &stats, Some(ADMIN)).await.status, 401);
    assert_eq!(call(Method::GET, &stats, Some(READ)).await.status, 401);

    std::fs::write(dir.path().join("tokens"), "admin\n").unwrap();
    hangup();
    // Give the signal time to be handled, then check nothing changed.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(call(Method::GET, &stats, Some(NEW_ADMIN)).await.status, 200);
    assert_eq!(call(Method::GET, &stats, Some(ADMIN)).await.status, 401);
}
