//! What a run prints: a line per second while it runs, and a table at the end.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::RunReport;
use super::worker::{Live, Phases};
use crate::stats::fmt_ms;

/// Prints a line per second to stderr: requests and errors in the second, and in the
/// measured part the P99 of the second before. Runs until aborted.
pub async fn print(live: Arc<Live>, label: String, phases: Phases) {
    let Phases {
        start,
        measure,
        end,
    } = phases;
    // A quarter second past each whole second, when the workers have handed in the
    // second that ended.
    let first = start + Duration::from_millis(1250);
    let mut tick = tokio::time::interval_at(first, Duration::from_secs(1));
    let (mut ok0, mut err0) = (0, 0);
    loop {
        let now = tick.tick().await;
        let (ok, err) = (live.ok.load(Relaxed), live.errors.load(Relaxed));
        let phase = if now <= measure {
            "warm-up".to_owned()
        } else {
            let t = (now - measure).as_secs() as usize;
            // The second that just ended, as far as the workers have handed it in.
            let p99 = live
                .timeline
                .lock()
                .get(t.saturating_sub(1))
                .map(|r| fmt_ms(r.summary(Duration::from_secs(1)).latency_ms.p99))
                .unwrap_or_else(|| "-".into());
            format!("{t:>3}s/{}s  p99 {p99:>8}", (end - measure).as_secs())
        };
        eprintln!(
            "  [{label}] {phase}  {:>8} req/s  errors {:>5}",
            ok - ok0,
            err - err0
        );
        (ok0, err0) = (ok, err);
    }
}

/// The run's result as a table, for a terminal.
pub fn table(report: &RunReport) -> String {
    let s = &report.summary;
    let l = &s.latency_ms;
    let mut out = format!(
        "{:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}\n",
        "qps", "p50", "p90", "p99", "p99.9", "max", "mean", "errors"
    );
    out += &format!(
        "{:>10.0} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}\n",
        s.qps,
        fmt_ms(l.p50),
        fmt_ms(l.p90),
        fmt_ms(l.p99),
        fmt_ms(l.p999),
        fmt_ms(l.max),
        fmt_ms(l.mean),
        s.errors
    );
    for (kind, n) in &s.errors_by_kind {
        out += &format!("  errors {kind}: {n}\n");
    }
    if let Some(late) = &report.pacer_late_ms {
        out += &format!(
            "  loadgen's timer woke late (not counted above): p50 {}, p99 {}, max {}\n",
            fmt_ms(late.p50),
            fmt_ms(late.p99),
            fmt_ms(late.max)
        );
    }
    out
}
