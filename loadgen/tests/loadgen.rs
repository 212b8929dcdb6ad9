//! `loadgen cluster --quick --static`, end to end and briefly: real `peercache serve`
//! processes on loopback behind the load generator's origin. The reports must exist,
//! the steady scenarios must have no errors, and the stampede must load each key once.
//! And `loadgen run` against two such nodes: over gRPC, in an open loop, against a dead
//! target, and with bad arguments.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

// The root package's test helpers for child processes; these tests use part of them.
#[allow(dead_code)]
#[path = "../../tests/common/process.rs"]
mod process;

use process::{Proc, free_port};

/// The `peercache` binary of this build. It is a binary of the library's package, not of
/// this one, so cargo names no `CARGO_BIN_EXE_` for it; it sits next to `loadgen` in the
/// target directory, and `cargo test` run at the workspace root builds it.
fn peercache_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_loadgen"))
        .with_file_name(format!("peercache{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build --bin peercache` (plain `cargo test` at the \
         workspace root builds it too)",
        bin.display()
    );
    bin
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_quick_static_cluster_run_writes_reports_and_its_checks_hold() {
    let out = std::env::temp_dir().join(format!("peercache-loadgen-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let stdout = quick_static_cluster_run(&out);

    // The table on stdout and in cluster.md has a row per scenario.
    let md = std::fs::read_to_string(out.join("cluster.md")).expect("cluster.md written");
    assert!(md.contains(
        "| scenario | QPS | P50 | P99 | P99.9 | errors | hit ratio | peer loads | source loads |"
    ));
    assert!(
        md.contains("Machine: ") && md.contains("Command: `"),
        "{md}"
    );
    let dir = out.join("cluster");
    for name in [
        "local-hit",
        "local-hit-resp",
        "remote-hit",
        "remote-hit-hot",
        "miss",
        "zipf-mixed",
        "stampede",
        "hotspot",
        "churn",
        "stall",
        "graceful-leave",
        "scale-out",
        "ceiling",
    ] {
        assert!(
            md.contains(&format!("| {name} |")),
            "no row for {name} in\n{md}"
        );
        assert!(
            stdout.lines().any(|l| l.starts_with(name)),
            "no row for {name} in\n{stdout}"
        );
        assert_scenario_report(&dir, name);
    }

    let stampede = json(&dir.join("stampede.json"));
    let per_key = stampede["extra"]["loads_per_key"]
        .as_object()
        .expect("loads per key");
    assert_eq!(per_key.len(), 3, "{stampede}");
    assert!(
        per_key.values().all(|n| n == 1),
        "loads per key: {per_key:?}"
    );
    assert_eq!(stampede["run"]["summary"]["ok"], 3000);
    // Every key went through every node: the two non-owners of each key asked its owner.
    assert!(stampede["peer_loads"].as_u64().unwrap() >= 6, "{stampede}");

    // The hot key's figures are there whether or not its owner found it hot in so short
    // a run: how fast it found it is a figure, not a check.
    let hotspot = json(&dir.join("hotspot.json"));
    assert!(
        hotspot["extra"]["qps_ratio"].as_f64().unwrap() > 0.0,
        "{hotspot}"
    );
    assert_eq!(hotspot["extra"]["hot_key"], "key:00000000", "{hotspot}");
    assert_eq!(hotspot["source_loads"], 0, "{hotspot}");

    let miss = json(&dir.join("miss.json"));
    assert_eq!(
        miss["source_loads"], miss["extra"]["distinct_keys"],
        "{miss}"
    );

    // What the timeline plot draws is there: churn's per-second origin loads and its
    // per-second timeline, over the whole measured part.
    let churn = json(&dir.join("churn.json"));
    let secs = churn["extra"]["source_loads_per_second"]
        .as_array()
        .expect("source loads per second");
    assert!(secs.len() >= 2, "{churn}");
    let timeline = churn["run"]["timeline"].as_array().expect("a timeline");
    assert!(timeline.len() + 1 >= secs.len(), "{churn}");
    for svg in ["percentiles.svg", "timeline.svg"] {
        let text = std::fs::read_to_string(dir.join(svg)).expect("plot written");
        assert!(
            text.contains("<svg") && text.contains("<polyline"),
            "{svg} has no lines"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// `loadgen cluster --quick --static`, shorter still, writing under `out`; its stdout.
fn quick_static_cluster_run(out: &Path) -> String {
    let run = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["cluster", "--quick", "--static", "--nodes", "3"])
        .args([
            "--duration",
            "1s",
            "--warmup",
            "300ms",
            "--concurrency",
            "16",
        ])
        .arg("--out")
        .arg(out)
        .env("PEERCACHE_BIN", peercache_bin())
        .output()
        .expect("loadgen runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(
        run.status.success(),
        "loadgen failed: {}\n{stdout}\n{stderr}",
        run.status
    );
    stdout.into_owned()
}

/// `dir/<name>.json` is scenario `name`'s: graceful-leave and scale-out skipped for want
/// of etcd, any other
/// with successful requests and percentiles, its checks passed and, but for churn, no
/// failed request.
fn assert_scenario_report(dir: &Path, name: &str) {
    let report = json(&dir.join(format!("{name}.json")));
    assert_eq!(report["name"], name);
    if name == "graceful-leave" || name == "scale-out" {
        assert!(
            report["skipped"]
                .as_str()
                .is_some_and(|s| s.contains("--etcd")),
            "{report}"
        );
        return;
    }
    let summary = &report["run"]["summary"];
    assert!(
        summary["ok"].as_u64().unwrap() > 0,
        "{name}: nothing succeeded: {summary}"
    );
    if name != "churn" {
        assert_eq!(summary["errors"], 0, "{name}: {summary}");
    }
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["passed"] == true),
        "{name}: {report}"
    );
    assert!(
        summary["percentiles"]
            .as_array()
            .is_some_and(|p| !p.is_empty()),
        "{name}"
    );
}

/// `loadgen run` with its JSON output; panics with its output if it fails.
fn loadgen_run(args: &[&str], json_path: &Path) -> Value {
    let run = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("run")
        .args(args)
        .arg("--json")
        .arg(json_path)
        .output()
        .expect("loadgen runs");
    assert!(
        run.status.success(),
        "loadgen run {args:?}: {}\n{}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let table = String::from_utf8_lossy(&run.stdout);
    assert!(
        table.contains("p99.9") && table.contains("errors"),
        "{table}"
    );
    json(json_path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_drives_grpc_owners_and_an_open_loop_and_fails_cleanly() {
    let (_nodes, targets) = start_static_nodes(2).await;
    let dir = std::env::temp_dir().join(format!("peercache-loadgen-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // gRPC to each key's owner, with writes.
    let short = ["--duration", "1s", "--warmup", "200ms"];
    let grpc_run = loadgen_run(
        &[
            &[
                "--target",
                &targets,
                "--protocol",
                "grpc",
                "--group",
                "g",
                "--keys",
                "200",
            ][..],
            &short[..],
            &["--mix", "get=80,set=10,remove=10", "--concurrency", "8"][..],
        ]
        .concat(),
        &dir.join("grpc.json"),
    );
    let s = &grpc_run["summary"];
    assert_eq!(s["errors"], 0, "{s}");
    assert!(s["ok"].as_u64().unwrap() > 50, "{s}");
    assert_eq!(grpc_run["config"]["route"], "owner");

    // Open loop: 400 requests/s for 2 s is 800 requests, whatever the latency.
    let open = loadgen_run(
        &[
            "--target",
            &targets,
            "--group",
            "g",
            "--keys",
            "1000",
            "--workload",
            "hotspot:0.2,0.8",
            "--rate",
            "400",
            "--connections",
            "4",
            "--duration",
            "2s",
            "--warmup",
            "0s",
        ],
        &dir.join("open.json"),
    );
    let s = &open["summary"];
    assert_eq!(s["errors"], 0, "{s}");
    let n = s["requests"].as_u64().unwrap();
    assert!((790..=800).contains(&n), "{n} requests at 400/s for 2 s");
    assert_eq!(
        open["timeline"].as_array().unwrap().len(),
        2,
        "{}",
        open["timeline"]
    );
    assert_eq!(open["config"]["load"]["open"]["rate"], 400.0);

    assert_a_dead_target_fails_as_connect(&short, &dir.join("dead.json"));
    assert_bad_arguments_are_refused(&targets);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A dead target: every request fails as `connect`, and the run still ends on time.
fn assert_a_dead_target_fails_as_connect(short: &[&str], json_path: &Path) {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let begin = Instant::now();
    let failed = loadgen_run(
        &[
            &["--target", &dead, "--group", "g", "--concurrency", "2"][..],
            short,
        ]
        .concat(),
        json_path,
    );
    assert!(
        begin.elapsed() < Duration::from_secs(10),
        "{:?}",
        begin.elapsed()
    );
    let s = &failed["summary"];
    assert_eq!(s["ok"], 0, "{s}");
    assert!(s["errors_by_kind"]["connect"].as_u64().unwrap() > 0, "{s}");
}

/// `n` `peercache serve` nodes listing each other as static peers, healthy; their HTTP
/// base URLs comma-separated, as `--target` takes them.
async fn start_static_nodes(n: usize) -> (Vec<Proc>, String) {
    let grpc: Vec<String> = (0..n)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut urls = Vec::new();
    let mut nodes = Vec::new();
    for addr in &grpc {
        let http = format!("127.0.0.1:{}", free_port());
        let child = Command::new(peercache_bin())
            .args([
                "serve",
                "--grpc-addr",
                addr,
                "--http-addr",
                &http,
                "--peers",
                &grpc.join(","),
            ])
            .args(["--group", "g:16MiB", "--source", "demo:1"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("the peercache binary runs");
        let mut node = Proc::new("peercache serve", child);
        let url = format!("http://{http}");
        node.until_healthy(&url).await;
        urls.push(url);
        nodes.push(node);
    }
    (nodes, urls.join(","))
}

/// Bad arguments to `loadgen run` are refused with a reason.
fn assert_bad_arguments_are_refused(targets: &str) {
    for (args, says) in [
        (vec!["--target", "127.0.0.1:8001"], "http://"),
        (
            vec!["--target", targets, "--workload", "pareto"],
            "unknown workload",
        ),
        (vec!["--target", targets, "--mix", "get=0"], "no operation"),
        (
            vec![
                "--target",
                targets,
                "--protocol",
                "grpc",
                "--route",
                "remote",
            ],
            "owner",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .arg("run")
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    }
}
