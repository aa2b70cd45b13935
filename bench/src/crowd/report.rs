//! The figures of one crowd run, written as JSON and printed as a table.

use serde::Serialize;

use super::commands::Cost;
use super::visitors::{PollMode, Tally};
use crate::spike::crowd::Sample;
use crate::spike::report::{new_histogram, Percentiles, Target, Verification};

/// One route in one phase.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Answers the route gives when it works (applications: 202, 200, 410; reads: 200).
    pub served: u64,
    /// Every other answer, and transport errors.
    pub other: u64,
    /// `served` per second of the phase.
    pub served_per_sec: f64,
    pub latency: Percentiles,
}

impl Route {
    pub fn of_tally(tally: &Tally, seconds: f64) -> Self {
        Self {
            served: tally.served,
            other: tally.other,
            served_per_sec: tally.served as f64 / seconds,
            latency: Percentiles::from(&tally.latency),
        }
    }

    pub fn of_applications(samples: &[Sample], seconds: f64) -> Self {
        let mut latency = new_histogram();
        for s in samples {
            latency.saturating_record(s.latency_us);
        }
        let served = samples
            .iter()
            .filter(|s| matches!(s.status, 200 | 202 | 410))
            .count() as u64;
        Self {
            served,
            other: samples.len() as u64 - served,
            served_per_sec: served as f64 / seconds,
            latency: Percentiles::from(&latency),
        }
    }
}

/// One phase: everyone in it started together and stopped together.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Phase {
    pub seconds: f64,
    pub apply: Route,
    pub admitted: u64,
    pub read: Option<Route>,
    pub poll: Option<Route>,
    /// Every route's served answers per second.
    pub served_per_sec: f64,
}

/// Redis commands per request, each kind alone against the crowd's event once it was sold out
/// and every winner persisted, and reads of a fresh open event nobody applied to.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedisCosts {
    /// The service's own commands per second while nobody asks anything.
    pub background_per_sec: f64,
    pub read_sold_out: Option<Cost>,
    pub read_open: Option<Cost>,
    /// Polls by the users who applied in phase B (winners ISSUED, the rest SOLD_OUT).
    pub poll_sold_out: Option<Cost>,
    /// How many users those polls went round.
    pub pollers_users: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CrowdReport {
    pub users: u32,
    pub stock: u32,
    pub events: u32,
    pub redis_mode: String,
    pub concurrency: usize,
    pub readers: usize,
    pub pollers: usize,
    pub poll_mode: PollMode,
    pub duration_secs: f64,
    /// Phase A: the appliers alone.
    pub alone: Phase,
    /// Phase B: a fresh event of the same size, the same appliers, readers and pollers.
    pub crowd: Phase,
    /// Applications/s in the crowd over applications/s alone.
    pub apply_ratio: f64,
    /// Every route's served answers/s in the crowd over applications/s alone.
    pub served_ratio: f64,
    /// None in cluster mode.
    pub redis: Option<RedisCosts>,
    /// Both phases' events in PostgreSQL.
    pub verification: Verification,
    pub targets: Vec<Target>,
}

impl CrowdReport {
    pub fn targets(&mut self) {
        let mut t = Vec::new();
        let read_cost = self.redis.as_ref().and_then(|r| {
            r.read_sold_out
                .iter()
                .chain(&r.read_open)
                .map(|c| c.per_request)
                .reduce(f64::max)
        });
        if let Some(cost) = read_cost {
            t.push(Target {
                name: "Redis commands per public event-page read",
                target: "<= 0.01".into(),
                measured: format!("{cost:.3} (the worse of sold-out and open)"),
                met: cost <= 0.01,
            });
        }
        t.push(Target {
            name: "all requests served in the crowd",
            target: ">= 1.0 x applications alone".into(),
            measured: format!(
                "{:.2} x ({:.0} vs {:.0} req/s)",
                self.served_ratio, self.crowd.served_per_sec, self.alone.apply.served_per_sec
            ),
            met: self.served_ratio >= 1.0,
        });
        if let Some(read) = &self.crowd.read {
            let apply = self.crowd.apply.latency.p99_ms;
            t.push(Target {
                name: "event-page p99 in the crowd",
                target: "<= the applications' p99 in the crowd".into(),
                measured: format!("{:.1} ms vs {apply:.1} ms", read.latency.p99_ms),
                met: read.latency.p99_ms <= apply,
            });
        }
        self.targets = t;
    }

    pub fn print_table(&self) {
        println!(
            "\n== fcfs-bench crowd: {} users, {} event(s) of stock {}, {} appliers, {} readers, {} pollers ({:?}), {:.0} s a phase, Redis {} ==\n",
            self.users, self.events, self.stock, self.concurrency, self.readers, self.pollers,
            self.poll_mode, self.duration_secs, self.redis_mode
        );
        let (a, c) = (&self.alone, &self.crowd);
        let lat = |r: &Route| {
            format!(
                "p50 {:.1} ms, p99 {:.1} ms",
                r.latency.p50_ms, r.latency.p99_ms
            )
        };
        let rate = |r: &Route| format!("{:.0}/s", r.served_per_sec);
        println!("| figure | measured |\n| --- | --- |");
        println!(
            "| applications/s alone | {} ({}) |",
            rate(&a.apply),
            lat(&a.apply)
        );
        println!(
            "| applications/s in the crowd | {} ({:.2}×; {}) |",
            rate(&c.apply),
            self.apply_ratio,
            lat(&c.apply)
        );
        for (name, route) in [("event page", &c.read), ("position", &c.poll)] {
            if let Some(r) = route {
                println!("| {name} in the crowd | {} ({}) |", rate(r), lat(r));
            }
        }
        println!(
            "| all requests in the crowd ÷ applications alone | {:.2} ({:.0} ÷ {:.0}) |",
            self.served_ratio, c.served_per_sec, a.apply.served_per_sec
        );
        if let Some(redis) = &self.redis {
            let cost = |c: &Option<Cost>| match c {
                Some(c) => format!("{:.3} ({:.3} raw)", c.per_request, c.per_request_raw),
                None => "-".into(),
            };
            println!(
                "| Redis commands per public read, sold-out event | {} |",
                cost(&redis.read_sold_out)
            );
            println!(
                "| Redis commands per public read, open idle event | {} |",
                cost(&redis.read_open)
            );
            println!(
                "| Redis commands per poll, sold-out event ({} applicants) | {} |",
                redis.pollers_users,
                cost(&redis.poll_sold_out)
            );
            println!(
                "\n(background: {:.1} Redis commands/s with nothing asked, taken off the per-request figures)",
                redis.background_per_sec
            );
        }
        let others = [
            ("applications alone", Some(&a.apply)),
            ("applications in the crowd", Some(&c.apply)),
            ("event page in the crowd", c.read.as_ref()),
            ("position in the crowd", c.poll.as_ref()),
        ];
        for (name, route) in others {
            if let Some(r) = route.filter(|r| r.other > 0) {
                println!("!! {name}: {} answers neither served nor expected", r.other);
            }
        }
        println!(
            "rows in PostgreSQL: {} ({})",
            self.verification.rows,
            if self.verification.ok {
                "exact"
            } else {
                "NOT EXACT"
            }
        );
        for t in &self.targets {
            let mark = if t.met { "met" } else { "MISSED" };
            println!(
                "target {:<45} {:<40} {} [{mark}]",
                t.name, t.target, t.measured
            );
        }
    }
}
