//! `--auth-file` over RESP: a connection presents its token with `AUTH [user] token` or
//! `HELLO 3 AUTH user token` before anything but AUTH, HELLO and QUIT (`-NOAUTH`), and
//! its role applies to each command (`-NOPERM`): read for GET/MGET/EXISTS/TTL, write for
//! SET/DEL, admin for INFO/CONFIG/DBSIZE.

use redis::{AsyncCommands, RedisResult, Value};

use super::common::process::TempDir;
use super::{connect, start};

const READ: &str = "reader-0123456789abcdef";
const WRITE: &str = "writer-0123456789abcdef";
const ADMIN: &str = "admin-0123456789abcdef";

fn token_file(dir: &TempDir) -> String {
    let path = dir.path().join("tokens");
    std::fs::write(
        &path,
        format!("read {READ}\nwrite {WRITE}\nadmin {ADMIN}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path.display().to_string()
}

/// A refusal's text, lower case (the crate writes codes as `NoPerm:`, `NoAuth:`).
fn refused(r: RedisResult<Value>) -> String {
    r.expect_err("a refusal").to_string().to_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_roles_apply_to_every_command() {
    let dir = TempDir::new("resp-auth");
    let file = token_file(&dir);
    let node = start(&["--group", "g", "--source", "none", "--auth-file", &file]).await;

    // No token: only AUTH, HELLO and QUIT.
    let mut anon = connect(node.port, false, None).await.unwrap();
    let e = refused(redis::cmd("GET").arg("k").query_async(&mut anon).await);
    assert!(e.contains("noauth"), "{e}");
    let e = refused(redis::cmd("PING").query_async(&mut anon).await);
    assert!(e.contains("noauth"), "{e}");
    let e = refused(
        redis::cmd("AUTH")
            .arg("not-a-token-at-all")
            .query_async(&mut anon)
            .await,
    );
    assert!(e.contains("wrongpass"), "{e}");
    let e = refused(redis::cmd("HELLO").arg(3).query_async(&mut anon).await);
    assert!(e.contains("noauth"), "{e}");
    // AUTH user token: the user name is not checked, the token is.
    let _: () = redis::cmd("AUTH")
        .arg("anyone")
        .arg(READ)
        .query_async(&mut anon)
        .await
        .unwrap();
    let _: Option<String> = anon.get("k").await.unwrap();

    // A token in the URL: the redis crate sends AUTH (RESP2) or HELLO 3 AUTH (RESP3).
    for resp3 in [false, true] {
        let mut read = connect(node.port, resp3, Some(READ)).await.unwrap();
        let mut write = connect(node.port, resp3, Some(WRITE)).await.unwrap();
        let mut admin = connect(node.port, resp3, Some(ADMIN)).await.unwrap();

        let e = refused(
            redis::cmd("SET")
                .arg("k")
                .arg("v")
                .query_async(&mut read)
                .await,
        );
        assert!(e.contains("noperm") && e.contains("write role"), "{e}");
        let _: () = write.set("k", "v").await.unwrap();
        let got: Vec<Option<String>> = read.mget(&["k", "other"]).await.unwrap();
        assert_eq!(got, vec![Some("v".to_owned()), None]);
        let e = refused(redis::cmd("DBSIZE").query_async(&mut write).await);
        assert!(e.contains("noperm") && e.contains("admin role"), "{e}");
        let n: i64 = redis::cmd("DBSIZE").query_async(&mut admin).await.unwrap();
        assert_eq!(n, 1);
        let _: i64 = admin.del("k").await.unwrap();
        let pong: String = redis::cmd("PING").query_async(&mut read).await.unwrap();
        assert_eq!(pong, "PONG");
    }

    // A wrong token in the URL fails the connection.
    assert!(
        connect(node.port, false, Some("wrong-0123456789abcdef"))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_without_tokens_is_refused_like_redis_without_a_password() {
    let node = start(&["--group", "g", "--source", "none"]).await;
    let mut c = connect(node.port, false, None).await.unwrap();
    let e = refused(redis::cmd("AUTH").arg(READ).query_async(&mut c).await);
    assert!(e.contains("without any password configured"), "{e}");
}
