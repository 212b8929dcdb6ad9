//! Stock tools against a node: redis-cli (commands and a `--pipe` mass insert),
//! redis-py (its default RESP3 and RESP2) and redis-benchmark (unmodified, plain and
//! pipelined). A missing tool fails the test with the command that installs it
//! (scripts/test.sh installs all three).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use std::io::Write;

use super::common::process::{Proc, TempDir, free_ports};
use super::start;

/// `name` on the PATH, or a failure saying how to install it.
fn tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    found.unwrap_or_else(|| {
        panic!("{name} is missing: install it with `apt-get install -y redis-tools` (scripts/test.sh does)")
    })
}

/// The Python of the virtualenv holding redis-py: REDIS_PY_PYTHON, or the one
/// scripts/test.sh makes in target/redis-py.
fn redis_py() -> PathBuf {
    let python = std::env::var_os("REDIS_PY_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/redis-py/bin/python"),
        PathBuf::from,
    );
    assert!(
        python.is_file(),
        "redis-py is missing: run scripts/test.sh, or `python3 -m venv target/redis-py && target/redis-py/bin/pip install redis` (needs python3-venv), or set REDIS_PY_PYTHON"
    );
    python
}

/// Runs `program args`, `stdin` fed to it; fails unless it succeeds.
fn run(program: &Path, args: &[&str], stdin: &[u8]) -> String {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr),
    );
    assert!(
        status.success(),
        "{} {args:?}: {status}\n{out}\n{err}",
        program.display()
    );
    format!("{out}{err}")
}

fn cli(port: u16, args: &[&str]) -> String {
    let port = port.to_string();
    run(
        &tool("redis-cli"),
        &[&["-p", &port][..], args].concat(),
        b"",
    )
    .trim()
    .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_commands_and_mass_insert() {
    let node = start(&["--group", "g", "--source", "none"]).await;
    let p = node.port;
    assert_eq!(cli(p, &["PING"]), "PONG");
    assert_eq!(cli(p, &["SET", "greeting", "hello world"]), "OK");
    assert_eq!(cli(p, &["GET", "greeting"]), "hello world");
    assert_eq!(cli(p, &["-3", "GET", "greeting"]), "hello world");
    assert!(cli(p, &["NOSUCH"]).contains("ERR unknown command 'NOSUCH'"));

    // --pipe: 10,000 SETs in the protocol's own form, as the Redis docs' mass insert.
    let mut input = Vec::new();
    for i in 0..10_000 {
        let (k, v) = (format!("mass:{i}"), format!("value {i}"));
        write!(
            input,
            "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
            k.len(),
            v.len()
        )
        .unwrap();
    }
    let out = run(
        &tool("redis-cli"),
        &["-p", &p.to_string(), "--pipe"],
        &input,
    );
    assert!(out.contains("errors: 0, replies: 10000"), "{out}");
    assert_eq!(cli(p, &["DBSIZE"]), "10001");
    assert_eq!(cli(p, &["GET", "mass:9999"]), "value 9999");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_in_both_protocols() {
    let node = start(&["--group", "g", "--source", "none"]).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/resp/redis_py.py");
    let out = run(
        &redis_py(),
        &[script.to_str().unwrap(), &node.port.to_string()],
        b"",
    );
    assert!(
        out.contains("protocol 3: ok") && out.contains("protocol 2: ok"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_benchmark_runs_without_errors() {
    let node = start(&["--group", "demo", "--source", "demo"]).await;
    let port = node.port.to_string();
    let base = [
        "-p",
        &port,
        "-t",
        "ping,set,get",
        "-n",
        "20000",
        "-r",
        "10000",
        "-d",
        "100",
        "-c",
        "50",
        "-q",
    ];
    for extra in [&[][..], &["-P", "16"], &["-3"]] {
        let out = run(&tool("redis-benchmark"), &[&base[..], extra].concat(), b"");
        // -q prints one line per test, the last figure of each run after carriage returns.
        for test in ["PING_INLINE", "PING_MBULK", "SET", "GET"] {
            assert!(
                out.contains(&format!("{test}: ")),
                "{extra:?}: no {test} result\n{out}"
            );
        }
        assert!(!out.contains("rror"), "{extra:?}: errors\n{out}");
    }
}

/// With `--http-tls-cert/--http-tls-key` the Redis port speaks TLS too: redis-cli
/// `--tls` with the CA works, plain redis-cli gets no answer, and a failed handshake
/// leaves the port serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_over_tls() {
    let dir = TempDir::new("resp-tls");
    let made = Command::new(env!("CARGO_BIN_EXE_peercache"))
        .args(["certs", "--node", "localhost+127.0.0.1", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let file = |name: &str| dir.path().join(name).display().to_string();
    let (cert, key, ca) = (
        file("localhost.pem"),
        file("localhost-key.pem"),
        file("ca.pem"),
    );
    let [grpc, http, port] = free_ports::<3>();
    let child = Command::new(env!("CARGO_BIN_EXE_peercache"))
        .arg("serve")
        .args(["--group", "g", "--source", "none"])
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .args(["--resp-addr", &format!("127.0.0.1:{port}")])
        .args(["--http-tls-cert", &cert, "--http-tls-key", &key])
        .env("RUST_LOG", "warn")
        .env_remove("PEERCACHE_ETCD")
        .env_remove("PEERCACHE_PEERS")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _node = Proc::new("peercache serve", child);
    let port = port.to_string();
    let secure = |args: &[&str]| {
        let base = ["--tls", "--cacert", &ca, "-h", "localhost", "-p", &port];
        Command::new(tool("redis-cli"))
            .args([&base[..], args].concat())
            .output()
            .unwrap()
    };
    let mut pong = String::new();
    for _ in 0..250 {
        pong = String::from_utf8_lossy(&secure(&["PING"]).stdout)
            .trim()
            .to_owned();
        if pong == "PONG" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(pong, "PONG", "redis-cli --tls gets an answer");
    // Plain RESP to the TLS port: the handshake fails and nothing is answered.
    let plain = Command::new(tool("redis-cli"))
        .args(["-p", &port, "PING"])
        .output()
        .unwrap();
    let plain = String::from_utf8_lossy(&plain.stdout);
    assert!(!plain.contains("PONG"), "plaintext answered: {plain}");
    let out = |o: Output| String::from_utf8_lossy(&o.stdout).trim().to_owned();
    assert_eq!(out(secure(&["SET", "k", "over tls"])), "OK");
    assert_eq!(out(secure(&["GET", "k"])), "over tls");
    // Certificates are checked by the client too: without the CA, no connection.
    let unverified = Command::new(tool("redis-cli"))
        .args(["--tls", "-h", "localhost", "-p", &port, "GET", "k"])
        .output()
        .unwrap();
    assert!(!out(unverified).contains("over tls"));
}
