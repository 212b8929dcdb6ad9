//! The SVG plots of a cluster run: latency by percentile for every scenario, and churn
//! and scale-out second by second around their event.

use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::cluster::Outcome;

/// A chart of linear x and logarithmic y, as both plots draw.
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, LogCoord<f64>>>;

/// x position of a percentile: 0 at 0 %, 1 at 90 %, 2 at 99 %, 3 at 99.9 %, ...
fn nines(percentile: f64) -> f64 {
    -(1.0 - (percentile / 100.0).min(0.99999)).log10()
}

/// Latency by percentile, a line per scenario that ran.
pub fn percentiles(path: &Path, outcomes: &[Outcome]) -> anyhow::Result<()> {
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
    for (i, (name, points)) in curves.into_iter().enumerate() {
        let style = Palette99::pick(i).to_rgba().stroke_width(2);
        line(&mut chart, name, points, style)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Churn and scale-out (`outcomes`) one above the other: successful and failed requests
/// and origin loads per second, and a mark at the event.
pub fn timeline(path: &Path, outcomes: &[&Outcome]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 360 * outcomes.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    for (o, area) in outcomes.iter().zip(root.split_evenly((outcomes.len(), 1))) {
        event_chart(&area, o)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

/// `o`'s part of the timeline plot, in `area`.
fn event_chart(area: &DrawingArea<SVGBackend<'_>, Shift>, o: &Outcome) -> anyhow::Result<()> {
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
    let mut chart = ChartBuilder::on(area)
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
    let floor = |v: Vec<(f64, f64)>| v.into_iter().map(|(t, y)| (t, y.max(0.5))).collect();
    for (name, series, color) in [
        ("successful requests", ok, BLUE),
        ("failed requests", errors, RED),
        ("origin loads", loads, GREEN),
    ] {
        line(&mut chart, name, floor(series), color.stroke_width(2))?;
    }
    chart
        .draw_series(LineSeries::new(
            [(event, 0.5), (event, top * 2.0)],
            BLACK.stroke_width(1),
        ))
        .map_err(plot_err)?;
    legend(&mut chart, SeriesLabelPosition::LowerRight)
}

/// Draws `points` joined by a line of `style`, called `name` in the legend.
fn line(
    chart: &mut Chart<'_, '_>,
    name: &str,
    points: Vec<(f64, f64)>,
    style: ShapeStyle,
) -> anyhow::Result<()> {
    chart
        .draw_series(LineSeries::new(points, style))
        .map_err(plot_err)?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    Ok(())
}

/// Draws the legend at `position`.
fn legend<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)
}

fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing a plot: {e}")
}
