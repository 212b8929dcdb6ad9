//! `loadgen cluster --quick --static`, end to end and briefly: real `peercache serve`
//! processes on loopback behind the load generator's origin. The reports must exist,
//! the steady scenarios must have no errors, and the stampede must load each key once.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_quick_static_cluster_run_writes_reports_and_its_checks_hold() {
    let out = std::env::temp_dir().join(format!("peercache-loadgen-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
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
        .arg(&out)
        .env("PEERCACHE_BIN", env!("CARGO_BIN_EXE_peercache"))
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
        "remote-hit",
        "remote-hit-hot",
        "miss",
        "zipf-mixed",
        "stampede",
        "churn",
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
        let report = json(&dir.join(format!("{name}.json")));
        assert_eq!(report["name"], name);
        if name == "scale-out" {
            assert!(
                report["skipped"]
                    .as_str()
                    .is_some_and(|s| s.contains("--etcd")),
                "{report}"
            );
            continue;
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

    let miss = json(&dir.join("miss.json"));
    assert_eq!(
        miss["source_loads"], miss["extra"]["distinct_keys"],
        "{miss}"
    );

    for svg in ["percentiles.svg", "timeline.svg"] {
        let text = std::fs::read_to_string(dir.join(svg)).expect("plot written");
        assert!(
            text.contains("<svg") && text.contains("<polyline"),
            "{svg} has no lines"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}
