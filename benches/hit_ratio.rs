//! Hit ratios of our policies against moka and quick_cache on the same key traces, and
//! the generator of `reports/store.md` (hit ratios plus the throughput numbers that
//! `cargo bench --bench stores` left in criterion's output directory).
//!
//! `cargo bench --bench hit_ratio` replays the full traces and writes the report;
//! `scripts/bench-stores.sh` runs both benches in order. Under `cargo test` (no `--bench`
//! argument) it replays a short trace only, as a smoke test, and writes nothing.

#[path = "../loadgen/src/workload.rs"]
mod workload;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use peercache::store::{Entry, Lru, Lru2, Policy, Sharded, Store, entry_charge};
use workload::{KEY_LEN, Zipf, ZipfScans, key_name, write_key};

/// Hot keys in every trace.
const KEYS: u64 = 100_000;
/// Requests per trace.
const REQUESTS: usize = 2_000_000;
/// Zipf exponent.
const S: f64 = 0.99;
/// Cache sizes, in per mille of `KEYS`.
const CAPACITIES_PERMILLE: [u64; 3] = [10, 50, 100];
/// A scan is this many times the cache's capacity in entries...
const SCAN_X_CAPACITY: u64 = 2;
/// ...and comes after this many times as many Zipf requests, so scans are 20% of traffic.
const GAP_X_SCAN: u64 = 4;
const SEED: u64 = 0x5eed;
/// moka's maintenance (eviction included) runs every this many operations.
const MOKA_MAINTENANCE_EVERY: u64 = 1024;
const CONTENDERS: [&str; 4] = ["Lru", "Lru2", "moka", "quick_cache"];
/// Criterion groups and functions written by `benches/stores.rs`, in report order.
const GROUPS: [&str; 3] = ["get_hit/1thread", "get_hit/2threads", "insert/1thread"];
const STORES: [&str; 5] = ["Lru", "Lru2", "Sharded<Lru2>", "moka", "quick_cache"];
const COMMAND: &str = "scripts/bench-stores.sh";

/// A cache replayed read-through: look up, insert on a miss.
trait ReadThrough {
    /// True on a hit; on a miss, inserts the key.
    fn access(&mut self, key: &str) -> bool;
}

struct Ours<P>(Sharded<P>, Bytes);

impl<P: Policy> ReadThrough for Ours<P> {
    fn access(&mut self, key: &str) -> bool {
        let hit = self.0.get(key, Duration::ZERO).is_some();
        if !hit {
            self.0
                .insert(key, Entry::new(self.1.clone(), 0))
                .expect("version 0 is never stale and the entry fits");
        }
        hit
    }
}

struct Moka(moka::sync::Cache<String, Bytes>, Bytes, u64);

impl ReadThrough for Moka {
    fn access(&mut self, key: &str) -> bool {
        self.2 += 1;
        if self.2.is_multiple_of(MOKA_MAINTENANCE_EVERY) {
            self.0.run_pending_tasks();
        }
        let hit = self.0.get(key).is_some();
        if !hit {
            self.0.insert(key.to_owned(), self.1.clone());
        }
        hit
    }
}

struct Quick(quick_cache::sync::Cache<String, Bytes>, Bytes);

impl ReadThrough for Quick {
    fn access(&mut self, key: &str) -> bool {
        let hit = self.0.get(key).is_some();
        if !hit {
            self.0.insert(key.to_owned(), self.1.clone());
        }
        hit
    }
}

/// A contender named as in [`CONTENDERS`], holding `entries` entries of our trace.
fn contender(name: &str, entries: u64) -> Box<dyn ReadThrough> {
    let value = Bytes::from_static(&[7; 16]);
    // Keys all have the same length, so a byte capacity is an exact entry count.
    let bytes = entries * entry_charge(&key_name(0), &value);
    match name {
        "Lru" => Box::new(Ours(Sharded::new(bytes, 1, Lru::new), value)),
        "Lru2" => Box::new(Ours(Sharded::new(bytes, 1, Lru2::new), value)),
        "moka" => Box::new(Moka(moka::sync::Cache::new(entries), value, 0)),
        "quick_cache" => Box::new(Quick(
            quick_cache::sync::Cache::new(entries as usize),
            value,
        )),
        _ => unreachable!("unknown contender {name}"),
    }
}

fn hit_ratio(cache: &mut dyn ReadThrough, trace: &[u64]) -> f64 {
    let mut key = String::new();
    let mut hits = 0u64;
    for &id in trace {
        write_key(&mut key, id);
        hits += u64::from(cache.access(&key));
    }
    hits as f64 / trace.len() as f64
}

struct Row {
    trace: &'static str,
    entries: u64,
    /// Hit ratio per contender, in [`CONTENDERS`] order.
    ratios: Vec<f64>,
}

fn run_hit_ratios(keys: u64, requests: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    for trace_name in ["zipf", "zipf+scans"] {
        for permille in CAPACITIES_PERMILLE {
            let entries = keys * permille / 1000;
            let scan = SCAN_X_CAPACITY * entries;
            let trace: Vec<u64> = match trace_name {
                "zipf" => Zipf::new(keys, S, SEED)
                    .expect("valid")
                    .take(requests)
                    .collect(),
                _ => ZipfScans::new(keys, S, GAP_X_SCAN * scan, scan, SEED)
                    .expect("valid")
                    .take(requests)
                    .collect(),
            };
            let ratios = CONTENDERS
                .iter()
                .map(|name| hit_ratio(&mut *contender(name, entries), &trace))
                .collect();
            rows.push(Row {
                trace: trace_name,
                entries,
                ratios,
            });
        }
    }
    rows
}

fn hit_ratio_table(rows: &[Row], keys: u64) -> String {
    let mut t = String::from(
        "| trace | capacity | Lru | Lru2 | moka | quick_cache \
         | Lru2 − moka | Lru2 − quick_cache | Lru − moka | Lru − quick_cache |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let [lru, lru2, moka, qc] = [0, 1, 2, 3].map(|i| 100.0 * r.ratios[i]);
        let pct = r.entries as f64 * 100.0 / keys as f64;
        let _ = writeln!(
            t,
            "| {} | {} ({pct}%) | {lru:.2}% | {lru2:.2}% | {moka:.2}% | {qc:.2}% \
             | {:+.2} pp | {:+.2} pp | {:+.2} pp | {:+.2} pp |",
            r.trace,
            r.entries,
            lru2 - moka,
            lru2 - qc,
            lru - moka,
            lru - qc
        );
    }
    t
}

/// One criterion result: elements per second (mean, and its 95% interval) and age.
struct Measured {
    ops: f64,
    ops_low: f64,
    ops_high: f64,
    age: Duration,
}

/// Where criterion writes, found the way criterion finds it.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    let metadata = std::env::var_os("CARGO").and_then(|cargo| {
        let out = Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(PathBuf::from(v["target_directory"].as_str()?).join("criterion"))
    });
    metadata.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/criterion"))
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Criterion results under `dir`, by (group, function): one per saved baseline named
/// `run<N>` (as `scripts/bench-stores.sh` saves them), or the latest (`new/`) if none.
fn criterion_results(dir: &Path) -> Vec<((String, String), Vec<Measured>)> {
    let mut found = Vec::new();
    let subdirs = |d: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(d)
            .map(|it| {
                it.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    };
    for group in subdirs(dir) {
        for function in subdirs(&group) {
            let mut runs: Vec<PathBuf> = subdirs(&function)
                .into_iter()
                .filter(|d| {
                    d.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("run"))
                })
                .collect();
            runs.sort();
            if runs.is_empty() {
                runs.push(function.join("new"));
            }
            let mut id = None;
            let mut measured = Vec::new();
            for run in runs {
                if let Some((key, m)) = read_run(&run) {
                    id = Some(key);
                    measured.push(m);
                }
            }
            if let Some(id) = id {
                found.push((id, measured));
            }
        }
    }
    found
}

/// One criterion result directory: (group, function) and its throughput.
fn read_run(dir: &Path) -> Option<((String, String), Measured)> {
    let (Some(bench), Some(est)) = (
        read_json(&dir.join("benchmark.json")),
        read_json(&dir.join("estimates.json")),
    ) else {
        return None;
    };
    let elements = bench["throughput"]["Elements"].as_f64().unwrap_or(1.0);
    let mean = &est["mean"];
    let ns = |v: &serde_json::Value| v.as_f64().filter(|&ns| ns > 0.0);
    let (Some(point), Some(low), Some(high)) = (
        ns(&mean["point_estimate"]),
        ns(&mean["confidence_interval"]["lower_bound"]),
        ns(&mean["confidence_interval"]["upper_bound"]),
    ) else {
        return None;
    };
    let age = std::fs::metadata(dir.join("estimates.json"))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default();
    let id = |k: &str| bench[k].as_str().unwrap_or_default().to_owned();
    Some((
        (id("group_id"), id("function_id")),
        Measured {
            ops: elements * 1e9 / point,
            ops_low: elements * 1e9 / high,
            ops_high: elements * 1e9 / low,
            age,
        },
    ))
}

/// The median run of a contender (by throughput) and the spread over all its runs.
struct Summary<'a> {
    median: &'a Measured,
    min: f64,
    max: f64,
    runs: usize,
}

fn summarize(runs: &[Measured]) -> Option<Summary<'_>> {
    let mut sorted: Vec<&Measured> = runs.iter().collect();
    sorted.sort_by(|a, b| a.ops.total_cmp(&b.ops));
    Some(Summary {
        median: sorted.get(sorted.len() / 2)?,
        min: sorted.first()?.ops,
        max: sorted.last()?.ops,
        runs: sorted.len(),
    })
}

fn throughput_section(dir: &Path) -> String {
    let results = criterion_results(dir);
    let get = |g: &str, f: &str| {
        results
            .iter()
            .find(|((rg, rf), _)| rg == g && rf == f)
            .and_then(|(_, runs)| summarize(runs))
    };
    let wanted: Vec<_> = GROUPS
        .iter()
        .flat_map(|g| STORES.iter().map(move |f| (*g, *f)))
        .collect();
    let present: Vec<Summary<'_>> = wanted.iter().filter_map(|(g, f)| get(g, f)).collect();
    if present.is_empty() {
        return format!(
            "No criterion results found under `{}`: run `cargo bench --bench stores` \
             (or `{COMMAND}`) first. No throughput numbers are reported.\n",
            dir.display()
        );
    }
    let oldest = present
        .iter()
        .map(|m| m.median.age)
        .max()
        .unwrap_or_default();
    let runs = present.iter().map(|m| m.runs).min().unwrap_or_default();
    let mut s = format!(
        "Each contender was measured in {runs} separate criterion runs (baselines `run1`… \
         under `{}`; the oldest result was written {} min before this report). Reported: \
         the median run's mean with its 95% confidence interval, and the lowest and highest \
         run means, because on this shared 2-core machine runs differ by more than one \
         run's interval. Ratios compare medians.",
        dir.display(),
        oldest.as_secs() / 60
    );
    if present.len() < wanted.len() {
        s += &format!(
            " {} of {} results are missing.",
            wanted.len() - present.len(),
            wanted.len()
        );
    }
    s += "\n\n| bench | store | Mops/s median (95% CI) | runs min–max | ns/op | × quick_cache | × moka |\n\
          |---|---|---:|---:|---:|---:|---:|\n";
    let ratio = |m: &Summary<'_>, peer: Option<Summary<'_>>| {
        peer.map_or("n/a".to_owned(), |p| {
            format!("{:.2}×", m.median.ops / p.median.ops)
        })
    };
    for (g, f) in &wanted {
        let Some(m) = get(g, f) else {
            let _ = writeln!(s, "| {g} | {f} | missing | | | | |");
            continue;
        };
        let _ = writeln!(
            s,
            "| {g} | {f} | {:.2} ({:.2}–{:.2}) | {:.2}–{:.2} | {:.1} | {} | {} |",
            m.median.ops / 1e6,
            m.median.ops_low / 1e6,
            m.median.ops_high / 1e6,
            m.min / 1e6,
            m.max / 1e6,
            1e9 / m.median.ops,
            ratio(&m, get(g, "quick_cache")),
            ratio(&m, get(g, "moka")),
        );
    }
    s + "\nns/op is wall time per operation; with 2 threads both run at once, so it is half \
         the time one get takes.\n"
}

/// Output of a command, trimmed, if it ran and succeeded.
fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn machine_facts() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let commit = command_output("git", &["rev-parse", "--short", "HEAD"]).map_or_else(
        || "unknown".to_owned(),
        |c| match command_output("git", &["status", "--porcelain", "--untracked-files=no"]) {
            Some(changes) if !changes.is_empty() => format!("{c} (with uncommitted changes)"),
            _ => c,
        },
    );
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let fact = |v: Option<String>| v.unwrap_or_else(|| "unknown".into());
    format!(
        "- date: {}\n- CPU: {cpu}\n- cores (nproc): {cores}\n- load average at report time: {}\n\
         - git commit: {commit}\n- {}\n",
        fact(command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])),
        fact(
            std::fs::read_to_string("/proc/loadavg")
                .ok()
                .map(|l| l.trim().to_owned())
        ),
        fact(command_output(&rustc, &["--version"])),
    )
}

/// How this report came about, from what `scripts/bench-stores.sh` exports.
fn provenance() -> String {
    match std::env::var("BENCH_STORES_COMMAND") {
        Ok(cmd) if cmd == COMMAND => format!(
            "Produced by `{COMMAND}` (`cargo bench --bench stores -- --noplot`, then \
             `cargo bench --bench hit_ratio`, which writes this file)."
        ),
        Ok(cmd) => format!(
            "Produced by `{cmd}`: criterion ran with extra arguments (`{}`), so the \
             throughput numbers are a smoke run, not a measurement; `{COMMAND}` without \
             arguments is the real run.",
            cmd.strip_prefix(COMMAND).unwrap_or_default().trim()
        ),
        Err(_) => format!(
            "Produced by `cargo bench --bench hit_ratio` on its own, not by `{COMMAND}`: \
             the throughput table shows whatever criterion saved last (see its age)."
        ),
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not.
    if !std::env::args().any(|a| a == "--bench") {
        #[cfg(test)]
        for (name, check) in workload::tests::CHECKS {
            check();
            println!("workload check {name}: ok");
        }
        let rows = run_hit_ratios(10_000, 50_000);
        println!(
            "hit_ratio smoke test (not a measurement):\n{}",
            hit_ratio_table(&rows, 10_000)
        );
        return;
    }
    let hit_ratios = hit_ratio_table(&run_hit_ratios(KEYS, REQUESTS), KEYS);
    let throughput = throughput_section(&criterion_dir());
    let report = format!(
        "# Store benchmarks\n\n{}\n\n\
         ## Machine\n\n{}\n\
         ## Throughput\n\n\
         `benches/stores.rs`. `get_hit`: gets of 100,000 present keys ({KEY_LEN}-byte keys, \
         100-byte values, each its own buffer; room for twice as many, so nothing is \
         evicted) in a shuffled order other than the insertion order; with 2 threads each walks its own half. `insert`: inserts of keys not \
         present into a cache full at 100,000 entries, so each one evicts (moka evicts \
         in its deferred maintenance; only the insert calls are timed). Lru and Lru2 are \
         one-bucket `Sharded` stores; `Sharded<Lru2>` has 16 buckets. Ours are called \
         through the `Store` trait; moka and quick_cache get a `String` key on insert.\n\n\
         {throughput}\n\
         ## Hit ratio\n\n\
         `benches/hit_ratio.rs`, traces from `loadgen/src/workload.rs` (seed {SEED:#x}), \
         {REQUESTS} requests each, replayed read-through (get; insert on a miss) from a \
         cold cache; every request counts. `zipf`: Zipf(s = {S}) over {KEYS} keys. \
         `zipf+scans`: rounds of {GAP_X_SCAN}×L Zipf requests then a one-off scan of L = \
         {SCAN_X_CAPACITY}× capacity fresh keys, so 20% of requests can never hit. \
         Capacity is in entries: Lru and Lru2 are one-bucket stores of exactly that many \
         entries' bytes; moka has `max_capacity` entries with `run_pending_tasks()` every \
         {MOKA_MAINTENANCE_EVERY} requests; quick_cache is `Cache::new(entries)`. \
         Differences are in percentage points. Lru and Lru2 are deterministic; moka and \
         quick_cache seed their hashers at random, so their ratios move by a few \
         hundredths of a point between runs.\n\n{hit_ratios}",
        provenance(),
        machine_facts(),
    );
    println!("{report}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/store.md");
    std::fs::write(&path, report).expect("reports/ is writable");
    println!("wrote {}", path.display());
}
