//! The figures of one bench run, written as JSON and printed as a summary.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::crowd::Sample;
use super::sampler::Progress;

/// Latencies in µs, 1 µs to 60 s, three significant figures.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl From<&Histogram<u64>> for Percentiles {
    fn from(h: &Histogram<u64>) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

/// Requests and latency in one slice of time.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bucket {
    /// Start of the slice, seconds after the crowd started.
    pub t: f64,
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

pub fn buckets(samples: &[Sample], width: Duration) -> Vec<Bucket> {
    let width_us = width.as_micros() as u64;
    let last = samples.iter().map(|s| s.done_us).max().unwrap_or(0);
    let mut slices: Vec<Histogram<u64>> = (0..=last / width_us).map(|_| new_histogram()).collect();
    for s in samples {
        slices[(s.done_us / width_us) as usize].saturating_record(s.latency_us);
    }
    slices
        .iter()
        .enumerate()
        .map(|(i, h)| Bucket {
            t: (i as u64 * width_us) as f64 / 1e6,
            requests_per_sec: h.len() as f64 / width.as_secs_f64(),
            p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub name: &'static str,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    pub rows: i64,
    pub distinct_users: i64,
    /// Positions are exactly 1..=stock.
    pub positions_dense: bool,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub users: u32,
    /// Each event's stock.
    pub stock: u32,
    pub events: u32,
    /// `APP_REDIS__MODE` of the run: standalone, sentinel or cluster.
    pub redis_mode: String,
    pub concurrency: usize,
    pub apply_seconds: f64,
    pub apply_throughput: f64,
    pub admitted: u64,
    pub sold_out: u64,
    pub other_answers: u64,
    pub apply_latency: Percentiles,
    pub ceiling_throughput: f64,
    /// One event's admissions/s through the batched script, no HTTP, per batch size.
    pub batched_ceilings: Vec<super::ceiling::Batched>,
    /// Applications per script call and Redis time per application during the crowd.
    pub gate_cost: super::gate_cost::GateCost,
    /// The admissions' order against the order their requests were sent in.
    pub order: super::order::Order,
    /// Apply throughput over the raw Lua ceiling, both measured in this run.
    pub throughput_ratio: f64,
    pub page_idle: Percentiles,
    pub page_spike: Percentiles,
    /// The database-backed page's p99 during the spike over its idle p99.
    pub page_p99_ratio: f64,
    /// The page's p99 during the spike over the control route's p99 in the same window.
    pub page_to_control_p99_ratio: f64,
    /// The service's own HTTP floor and the other routes after the spike (same connections).
    pub rates: super::floor::Rates,
    /// Apply throughput over the floor (`GET /health/live`), both measured in this run.
    pub apply_floor_ratio: f64,
    pub sold_out_floor_ratio: f64,
    pub position_floor_ratio: f64,
    /// The control, `GET /health/live` (no Redis, no database), probed alongside.
    pub live_idle: Percentiles,
    pub live_spike: Percentiles,
    pub live_p99_ratio: f64,
    pub first_request_to_sold_out_ms: Option<f64>,
    pub last_admission_to_last_persisted_ms: Option<f64>,
    pub max_rss_mib: Option<f64>,
    /// Bytes of the events' Redis keys per admitted winner, once every winner is persisted.
    pub redis_bytes_per_winner: f64,
    pub verification: Verification,
    pub targets: Vec<Target>,
    pub timeline: Vec<Bucket>,
    pub progress: Vec<Progress>,
}

impl Report {
    pub fn targets(&mut self) {
        let mut t = Vec::new();
        let mut add = |name, target: &str, measured: String, met| {
            t.push(Target {
                name,
                target: target.into(),
                measured,
                met,
            })
        };
        add(
            "apply throughput",
            ">= 0.8 x the HTTP floor",
            format!(
                "{:.2} x ({:.0} vs {:.0} req/s)",
                self.apply_floor_ratio, self.apply_throughput, self.rates.floor
            ),
            self.apply_floor_ratio >= 0.8,
        );
        let single = self.batched_ceilings.iter().find(|c| c.batch == 1);
        let widest = self.batched_ceilings.iter().max_by_key(|c| c.batch);
        if let (Some(single), Some(widest)) = (single, widest) {
            let ratio = widest.admissions_per_sec / single.admissions_per_sec.max(1e-9);
            add(
                "batched script ceiling",
                ">= 3 x one per call",
                format!(
                    "{ratio:.2} x ({:.0} admissions/s {} a call vs {:.0} one a call)",
                    widest.admissions_per_sec, widest.batch, single.admissions_per_sec
                ),
                ratio >= 3.0,
            );
        }
        add(
            "real-time order",
            "0 answers before an earlier position was asked",
            format!(
                "{} violations; {} overtaken, by at most {:.2} ms",
                self.order.real_time_violations, self.order.overtaken, self.order.max_overtaking_ms
            ),
            self.order.real_time_violations == 0,
        );
        add(
            "SOLD_OUT answers",
            ">= 0.9 x the HTTP floor",
            format!(
                "{:.2} x ({:.0} req/s, {} not SOLD_OUT)",
                self.sold_out_floor_ratio, self.rates.sold_out, self.rates.sold_out_other_answers
            ),
            self.sold_out_floor_ratio >= 0.9 && self.rates.sold_out_other_answers == 0,
        );
        add(
            "position polling",
            ">= 0.8 x the HTTP floor",
            format!(
                "{:.2} x ({:.0} req/s)",
                self.position_floor_ratio, self.rates.position
            ),
            self.position_floor_ratio >= 0.8,
        );
        add(
            "apply p99",
            "<= 20 ms",
            format!(
                "{:.1} ms at {} connections",
                self.apply_latency.p99_ms, self.concurrency
            ),
            self.apply_latency.p99_ms <= 20.0,
        );
        add(
            "page p99 during spike",
            "<= 1.5 x control p99",
            format!(
                "{:.2} x ({:.1} vs {:.1} ms)",
                self.page_to_control_p99_ratio, self.page_spike.p99_ms, self.live_spike.p99_ms
            ),
            self.page_to_control_p99_ratio <= 1.5,
        );
        if let Some(ms) = self.last_admission_to_last_persisted_ms {
            add(
                "last admission to last row",
                "<= 2000 ms",
                format!("{ms:.0} ms for {} winners", self.stock * self.events),
                ms <= 2000.0,
            );
        }
        if let Some(mib) = self.max_rss_mib {
            add(
                "service memory",
                "< 200 MiB",
                format!("{mib:.0} MiB for {} applicants", self.users),
                mib < 200.0,
            );
        }
        add(
            "Redis memory per winner",
            "reported",
            format!(
                "{:.0} bytes ({:.1} MiB for {} winners)",
                self.redis_bytes_per_winner,
                self.redis_bytes_per_winner * f64::from(self.stock * self.events) / 1048576.0,
                self.stock * self.events
            ),
            true,
        );
        add(
            "persisted exactly",
            "stock rows, distinct users, positions 1..=stock",
            format!("{:?}", self.verification),
            self.verification.ok,
        );
        self.targets = t;
    }

    pub fn print_summary(&self) {
        println!(
            "\n== fcfs-coupon bench: {} users, {} event(s) of stock {}, {} connections, Redis {} ==",
            self.users, self.events, self.stock, self.concurrency, self.redis_mode
        );
        println!(
            "apply            {:>9.0} req/s over {:.2} s  (admitted {}, sold out {}, other {})",
            self.apply_throughput,
            self.apply_seconds,
            self.admitted,
            self.sold_out,
            self.other_answers
        );
        println!(
            "apply latency    p50 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms  max {:.1} ms",
            self.apply_latency.p50_ms,
            self.apply_latency.p99_ms,
            self.apply_latency.p999_ms,
            self.apply_latency.max_ms
        );
        println!(
            "HTTP floor       {:>9.0} req/s (GET /health/live, same connections) -> apply {:.2} x",
            self.rates.floor, self.apply_floor_ratio
        );
        println!(
            "SOLD_OUT again   {:>9.0} req/s -> {:.2} x;  position polling {:.0} req/s -> {:.2} x",
            self.rates.sold_out,
            self.sold_out_floor_ratio,
            self.rates.position,
            self.position_floor_ratio
        );
        println!(
            "raw Lua ceiling  {:>9.0} calls/s  -> ratio {:.2}",
            self.ceiling_throughput, self.throughput_ratio
        );
        for c in &self.batched_ceilings {
            println!(
                "batched script   {:>9.0} admissions/s at {:>3} a call, Redis {} per admission",
                c.admissions_per_sec,
                c.batch,
                c.redis_usec_per_admission
                    .map_or("n/a".into(), |us| format!("{us:.2} µs"))
            );
        }
        println!(
            "during the crowd {} applications per script call, Redis {} per application",
            self.gate_cost
                .applications_per_call
                .map_or("n/a".into(), |n| format!("{n:.1}")),
            self.gate_cost
                .redis_usec_per_application
                .map_or("n/a".into(), |us| format!("{us:.2} µs"))
        );
        println!(
            "/me/coupons p99  idle {:.1} ms, spike {:.1} ms -> ratio {:.2}",
            self.page_idle.p99_ms, self.page_spike.p99_ms, self.page_p99_ratio
        );
        println!(
            "/health/live p99 idle {:.1} ms, spike {:.1} ms -> ratio {:.2} (control: no data store)",
            self.live_idle.p99_ms, self.live_spike.p99_ms, self.live_p99_ratio
        );
        for target in &self.targets {
            println!(
                "  [{}] {:<28} target {:<24} measured {}",
                if target.met { "met" } else { "MISSED" },
                target.name,
                target.target,
                target.measured
            );
        }
    }
}
