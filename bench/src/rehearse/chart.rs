//! The rehearsal as a picture: answers per second by route, the crowd's latency, and winners
//! admitted and ISSUED over time (seconds since the event was created).

use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;
use plotters::prelude::*;

use super::traffic::{Observed, Route};
use crate::spike::chart::panel;
use crate::spike::report::buckets;

const SLICE: f64 = 0.25;

pub fn draw(seen: &Observed, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1100, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let panels = root.split_evenly((3, 1));
    let t_max = seen
        .answers
        .iter()
        .map(|a| a.done_us as f64 / 1e6)
        .fold(1.0, f64::max);

    let rate = |route: Route| {
        let mut slices = vec![0u64; (t_max / SLICE) as usize + 1];
        for a in seen.answers.iter().filter(|a| a.route == route) {
            slices[(a.done_us as f64 / 1e6 / SLICE) as usize] += 1;
        }
        slices
            .iter()
            .enumerate()
            .map(|(i, n)| (i as f64 * SLICE, *n as f64 / SLICE))
            .collect::<Vec<_>>()
    };
    panel(
        &panels[0],
        "Answers per second",
        "req/s",
        t_max,
        &[
            ("read event", &BLUE, rate(Route::ReadEvent)),
            ("apply", &RED, rate(Route::Apply)),
            ("apply again", &MAGENTA, rate(Route::ApplyAgain)),
            ("position", &BLACK, rate(Route::Position)),
        ],
    )?;

    let crowd = buckets(&seen.crowd, Duration::from_secs_f64(SLICE));
    panel(
        &panels[1],
        "The crowd's applications: latency",
        "ms",
        t_max,
        &[
            (
                "p50",
                &GREEN,
                crowd.iter().map(|b| (b.t, b.p50_ms)).collect(),
            ),
            ("p99", &RED, crowd.iter().map(|b| (b.t, b.p99_ms)).collect()),
        ],
    )?;

    let cumulative = |mut times: Vec<u64>| {
        times.sort_unstable();
        times
            .iter()
            .enumerate()
            .map(|(i, us)| (*us as f64 / 1e6, (i + 1) as f64))
            .collect::<Vec<_>>()
    };
    let admitted = seen
        .crowd
        .iter()
        .filter(|s| s.status == 202)
        .map(|s| s.done_us)
        .collect();
    panel(
        &panels[2],
        "Winners",
        "winners",
        t_max,
        &[
            ("admitted (202)", &BLUE, cumulative(admitted)),
            (
                "ISSUED (seen by polling)",
                &BLACK,
                cumulative(seen.issued_us.values().copied().collect()),
            ),
        ],
    )?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
