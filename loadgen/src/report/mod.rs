//! Reports of a cluster run: `cluster.md` (table, command, machine), one JSON per
//! scenario, and SVG plots ([`plot`]) of the percentile curves and of churn and
//! scale-out over time.

mod plot;

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::cluster::Outcome;
use crate::stats::fmt_ms;

/// Where and how the run was made.
pub struct Facts {
    /// The command line.
    pub command: String,
    /// What the settings were, one line.
    pub setup: String,
    /// The machine and checkout, from [`Facts::machine`] when the run began.
    pub machine: String,
}

impl Facts {
    /// Cores, CPU model, memory and commit of this machine and checkout.
    pub fn machine() -> String {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, m)| m.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_gib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or("?".into(), |kb| format!("{:.0}", kb / 1024.0 / 1024.0));
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
        let dirty =
            git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        format!(
            "{cores} cores, {cpu}, {mem_gib} GiB RAM, commit {commit}{}; the load generator, the origin and every node share the cores",
            if dirty { "+dirty" } else { "" }
        )
    }
}

/// One row per scenario, as text for a terminal.
pub fn text_table(outcomes: &[Outcome]) -> String {
    let mut out = format!(
        "{:<15} {:>9} {:>9} {:>9} {:>9} {:>7} {:>6} {:>9} {:>8}\n",
        "scenario", "qps", "p50", "p99", "p99.9", "errors", "hit%", "peer", "source"
    );
    for o in outcomes {
        let Some(c) = cells(o) else {
            let why = o.skipped.as_deref().unwrap_or("did not run");
            out += &format!("{:<15} skipped: {why}\n", o.name);
            continue;
        };
        out += &format!(
            "{:<15} {:>9} {:>9} {:>9} {:>9} {:>7} {:>6} {:>9} {:>8}\n",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]
        );
    }
    out
}

/// A row of both tables: name, QPS, P50, P99, P99.9, errors, hit ratio in percent (`-`
/// if the nodes saw no get), peer loads, source loads; `None` if the scenario did not run.
fn cells(o: &Outcome) -> Option<[String; 9]> {
    let run = o.run.as_ref()?;
    let (s, l) = (&run.summary, &run.summary.latency_ms);
    Some([
        o.name.clone(),
        format!("{:.0}", s.qps),
        fmt_ms(l.p50),
        fmt_ms(l.p99),
        fmt_ms(l.p999),
        s.errors.to_string(),
        o.hit_ratio
            .map_or("-".into(), |h| format!("{:.1}", h * 100.0)),
        o.peer_loads.to_string(),
        o.source_loads.to_string(),
    ])
}

/// Writes `out/cluster.md`, `out/cluster/<scenario>.json` and the plots.
pub fn write(out: &Path, outcomes: &[Outcome], facts: &Facts) -> anyhow::Result<()> {
    let dir = out.join("cluster");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for o in outcomes {
        let path = dir.join(format!("{}.json", o.name));
        std::fs::write(&path, serde_json::to_string_pretty(o)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    plot::percentiles(&dir.join("percentiles.svg"), outcomes)?;
    let timed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.run.is_some() && o.extra.get("source_loads_per_second").is_some())
        .collect();
    if !timed.is_empty() {
        plot::timeline(&dir.join("timeline.svg"), &timed)?;
    }
    let path = out.join("cluster.md");
    std::fs::write(&path, markdown(outcomes, facts, !timed.is_empty()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `cluster.md`: the facts, a row per scenario, each scenario's findings and checks, and
/// the plots (the timeline only if it was drawn).
fn markdown(outcomes: &[Outcome], facts: &Facts, timeline: bool) -> String {
    let mut md = String::new();
    md += "# Cluster scenarios\n\n";
    let _ = writeln!(md, "Command: `{}`\n", facts.command);
    let _ = writeln!(md, "Setup: {}\n", facts.setup);
    let _ = writeln!(md, "Machine: {}\n", facts.machine);
    md +=
        "| scenario | QPS | P50 | P99 | P99.9 | errors | hit ratio | peer loads | source loads |\n";
    md += "|---|---|---|---|---|---|---|---|---|\n";
    for o in outcomes {
        md += &markdown_row(o);
    }
    md += "\nQPS counts successful requests per second of the measured part; latencies are of \
           successful requests, from HdrHistogram. Hit ratio is 1 − origin loads / gets the nodes \
           received. Peer loads are gets a node answered by asking the key's owner; source loads \
           are what the origin counted.\n\n";
    md += "## Scenarios\n\n";
    for o in outcomes {
        md += &markdown_section(o);
    }
    md += "## Plots\n\n![latency by percentile](cluster/percentiles.svg)\n\n";
    if timeline {
        md += "![churn and scale-out over time](cluster/timeline.svg)\n";
    }
    md
}

/// `o`'s row of the table in `cluster.md`.
fn markdown_row(o: &Outcome) -> String {
    let Some(mut c) = cells(o) else {
        return format!(
            "| {} | skipped: {} | | | | | | | |\n",
            o.name,
            o.skipped.as_deref().unwrap_or("-")
        );
    };
    if o.hit_ratio.is_some() {
        c[6] += " %";
    }
    format!("| {} |\n", c.join(" | "))
}

/// `o`'s section in `cluster.md`: what it does, its findings, errors and checks.
fn markdown_section(o: &Outcome) -> String {
    let mut md = format!("### {}\n\n{}.\n\n", o.name, o.about);
    if let Some(why) = &o.skipped {
        let _ = writeln!(md, "Skipped: {why}.\n");
        return md;
    }
    for note in &o.notes {
        let _ = writeln!(md, "- {note}");
    }
    if let Some(run) = &o.run {
        for (kind, n) in &run.summary.errors_by_kind {
            let _ = writeln!(md, "- errors `{kind}`: {n}");
        }
    }
    for c in &o.checks {
        let _ = writeln!(
            md,
            "- check: {} — {}",
            c.what,
            if c.passed { "passed" } else { "FAILED" }
        );
    }
    let _ = writeln!(
        md,
        "\nDetails: [cluster/{0}.json](cluster/{0}.json)\n",
        o.name
    );
    md
}
