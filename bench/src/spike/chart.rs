//! The run as a picture: request rate, latency percentiles, and the pipeline's progress.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use super::report::Report;

pub fn draw(report: &Report, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1100, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let panels = root.split_evenly((3, 1));
    let t_max = report
        .progress
        .last()
        .map(|p| p.t)
        .unwrap_or(1.0)
        .max(report.timeline.last().map(|b| b.t).unwrap_or(1.0));

    let rate: Vec<(f64, f64)> = report
        .timeline
        .iter()
        .map(|b| (b.t, b.requests_per_sec))
        .collect();
    panel(
        &panels[0],
        "Apply requests per second",
        "req/s",
        t_max,
        &[("answered", &BLUE, rate)],
    )?;

    let p50 = report.timeline.iter().map(|b| (b.t, b.p50_ms)).collect();
    let p99 = report.timeline.iter().map(|b| (b.t, b.p99_ms)).collect();
    panel(
        &panels[1],
        "Apply latency",
        "ms",
        t_max,
        &[("p50", &GREEN, p50), ("p99", &RED, p99)],
    )?;

    let series = |f: fn(&super::sampler::Progress) -> u64| {
        report
            .progress
            .iter()
            .map(|p| (p.t, f(p) as f64))
            .collect::<Vec<_>>()
    };
    panel(
        &panels[2],
        "Winners through the pipeline",
        "winners",
        t_max,
        &[
            ("admitted (Redis)", &BLUE, series(|p| p.admitted)),
            ("published (Kafka)", &MAGENTA, series(|p| p.published)),
            ("persisted (PostgreSQL)", &BLACK, series(|p| p.persisted)),
        ],
    )?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

pub(crate) type Series<'a> = (&'a str, &'a RGBColor, Vec<(f64, f64)>);

pub(crate) fn panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    title: &str,
    unit: &str,
    t_max: f64,
    series: &[Series],
) -> anyhow::Result<()> {
    let y_max = series
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|p| p.1))
        .fold(1.0_f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..y_max)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("seconds since the crowd started")
        .y_desc(unit)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (name, color, points) in series {
        let color = **color;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow!("{e}"))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
