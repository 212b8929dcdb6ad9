//! Reports of a cluster run: `cluster.md` (table, command, machine), one JSON per
//! scenario, and SVG plots of the percentile curves and of churn and scale-out over time.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

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
        let Some(run) = &o.run else {
            let why = o.skipped.as_deref().unwrap_or("did not run");
            out += &format!("{:<15} skipped: {why}\n", o.name);
            continue;
        };
        let (s, l) = (&run.summary, &run.summary.latency_ms);
        out += &format!(
            "{:<15} {:>9.0} {:>9} {:>9} {:>9} {:>7} {:>6} {:>9} {:>8}\n",
            o.name,
            s.qps,
            fmt_ms(l.p50),
            fmt_ms(l.p99),
            fmt_ms(l.p999),
            s.errors,
            o.hit_ratio
                .map_or("-".into(), |h| format!("{:.1}", h * 100.0)),
            o.peer_loads,
            o.source_loads
        );
    }
    out
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
    let percentiles = dir.join("percentiles.svg");
    plot_percentiles(&percentiles, outcomes)?;
    let timeline = dir.join("timeline.svg");
    let timed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.run.is_some() && o.extra.get("source_loads_per_second").is_some())
        .collect();
    if !timed.is_empty() {
        plot_timeline(&timeline, &timed)?;
    }

    let mut md = String::new();
    md += "# Cluster scenarios\n\n";
    let _ = writeln!(md, "Command: `{}`\n", facts.command);
    let _ = writeln!(md, "Setup: {}\n", facts.setup);
    let _ = writeln!(md, "Machine: {}\n", facts.machine);
    md +=
        "| scenario | QPS | P50 | P99 | P99.9 | errors | hit ratio | peer loads | source loads |\n";
    md += "|---|---|---|---|---|---|---|---|---|\n";
    for o in outcomes {
        let Some(run) = &o.run else {
            let _ = writeln!(
                md,
                "| {} | skipped: {} | | | | | | | |",
                o.name,
                o.skipped.as_deref().unwrap_or("-")
            );
            continue;
        };
        let (s, l) = (&run.summary, &run.summary.latency_ms);
        let _ = writeln!(
            md,
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            o.name,
            s.qps,
            fmt_ms(l.p50),
            fmt_ms(l.p99),
            fmt_ms(l.p999),
            s.errors,
            o.hit_ratio
                .map_or("-".into(), |h| format!("{:.1} %", h * 100.0)),
            o.peer_loads,
            o.source_loads
        );
    }
    md += "\nQPS counts successful requests per second of the measured part; latencies are of \
           successful requests, from HdrHistogram. Hit ratio is 1 − origin loads / gets the nodes \
           received. Peer loads are gets a node answered by asking the key's owner; source loads \
           are what the origin counted.\n\n";
    md += "## Scenarios\n\n";
    for o in outcomes {
        let _ = writeln!(md, "### {}\n\n{}.\n", o.name, o.about);
        if let Some(why) = &o.skipped {
            let _ = writeln!(md, "Skipped: {why}.\n");
            continue;
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
    }
    md += "## Plots\n\n![latency by percentile](cluster/percentiles.svg)\n\n";
    if !timed.is_empty() {
        md += "![churn and scale-out over time](cluster/timeline.svg)\n";
    }
    let path = out.join("cluster.md");
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// x position of a percentile: 0 at 0 %, 1 at 90 %, 2 at 99 %, 3 at 99.9 %, ...
fn nines(percentile: f64) -> f64 {
    -(1.0 - (percentile / 100.0).min(0.99999)).log10()
}

fn plot_percentiles(path: &Path, outcomes: &[Outcome]) -> anyhow::Result<()> {
    let curves: Vec<(&str, Vec<(f64, f64)>)> = outcomes
        .iter()
        .filter_map(|o| {
            let run = o.run.as_ref()?;
            let points = run
                .summary
                .percentiles
                .iter()
                .filter(|p| p.percentile < 100.0)
                .map(|p| (nines(p.percentile), p.ms.max(0.001)))
                .collect::<Vec<_>>();
            (!points.is_empty()).then_some((o.name.as_str(), points))
        })
        .collect();
    let top = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.1))
        .fold(1.0f64, f64::max);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Latency by percentile (successful requests)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..5f64, (0.01f64..top * 2.0).log_scale())
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency, ms (log)")
        .x_labels(6)
        .x_label_formatter(&|x| match x.round() as i64 {
            0 => "0".into(),
            1 => "90".into(),
            2 => "99".into(),
            3 => "99.9".into(),
            4 => "99.99".into(),
            _ => "99.999".into(),
        })
        .draw()
        .map_err(plot_err)?;
    for (i, (name, points)) in curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

fn plot_timeline(path: &Path, outcomes: &[&Outcome]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 360 * outcomes.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    for (o, area) in outcomes.iter().zip(root.split_evenly((outcomes.len(), 1))) {
        let run = o.run.as_ref().expect("filtered on run");
        let ok: Vec<(f64, f64)> = run
            .timeline
            .iter()
            .map(|s| (s.t as f64 + 0.5, s.ok as f64))
            .collect();
        let errors: Vec<(f64, f64)> = run
            .timeline
            .iter()
            .map(|s| (s.t as f64 + 0.5, s.errors as f64))
            .collect();
        let loads: Vec<(f64, f64)> = o.extra["source_loads_per_second"]
            .as_array()
            .map(|a| {
                a.iter()
                    .enumerate()
                    .map(|(t, v)| (t as f64 + 0.5, v.as_f64().unwrap_or(0.0)))
                    .collect()
            })
            .unwrap_or_default();
        let secs = run.config.duration.as_secs_f64().max(1.0);
        let top = ok
            .iter()
            .chain(&errors)
            .chain(&loads)
            .map(|p| p.1)
            .fold(10.0f64, f64::max);
        let event = o.extra["event_at_s"].as_f64().unwrap_or(0.0);
        let caption = format!(
            "{}: per second ({} at t={event:.1}s)",
            o.name,
            o.extra["event"].as_str().unwrap_or("event")
        );
        let mut chart = ChartBuilder::on(&area)
            .caption(caption, ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..secs, (0.5f64..top * 2.0).log_scale())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("seconds into the measured run")
            .y_desc("per second (log)")
            .draw()
            .map_err(plot_err)?;
        // Zeros cannot be drawn on a log scale; they sit on the axis at 0.5.
        let floor =
            |v: &Vec<(f64, f64)>| v.iter().map(|&(t, y)| (t, y.max(0.5))).collect::<Vec<_>>();
        for (name, series, color) in [
            ("successful requests", floor(&ok), BLUE),
            ("failed requests", floor(&errors), RED),
            ("origin loads", floor(&loads), GREEN),
        ] {
            chart
                .draw_series(LineSeries::new(series, color.stroke_width(2)))
                .map_err(plot_err)?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .draw_series(LineSeries::new(
                [(event, 0.5), (event, top * 2.0)],
                BLACK.stroke_width(1),
            ))
            .map_err(plot_err)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing a plot: {e}")
}
