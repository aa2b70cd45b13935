//! The rehearsal's verdict: each promise and each threshold, measured, passed or breached
//! (k6-style: one breach fails the run).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

use super::traffic::{Observed, Route};
use super::RehearseOptions;
use crate::spike::order;
use crate::spike::report::{new_histogram, Percentiles};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub name: &'static str,
    pub threshold: String,
    pub measured: String,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub coupon_id: i64,
    pub passed: bool,
    pub checks: Vec<Check>,
    /// Latency per route.
    pub routes: BTreeMap<String, Percentiles>,
    /// Answers per route and HTTP status (0: no answer).
    pub answers: BTreeMap<String, BTreeMap<u16, u64>>,
    pub admitted: u64,
    pub sold_out_ms: Option<f64>,
    pub drain_ms: Option<f64>,
    pub audit: Value,
}

/// What each route answers in a healthy drop; anything else is an error.
fn expected(route: Route, status: u16) -> bool {
    match route {
        Route::ReadEvent | Route::Position => status == 200,
        Route::ApplyEarly => status == 409,
        Route::Apply => status == 202 || status == 410,
        Route::ApplyAgain => status == 200 || status == 410,
    }
}

fn route_name(route: Route) -> String {
    serde_json::to_value(route)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

pub fn judge(opts: &RehearseOptions, seen: &Observed, audit: &Value, event: &Value) -> Verdict {
    let mut checks = Vec::new();
    let mut check = |name, threshold: String, measured: String, passed| {
        checks.push(Check {
            name,
            threshold,
            measured,
            passed,
        })
    };
    let expected_winners = u64::from(opts.stock.min(opts.users));
    let admitted = seen.winners.len() as u64;
    let issued = seen.issued_us.len() as u64;
    let rows = audit["database"]["rows"].as_u64().unwrap_or(0);
    let public_issued = event["issued"].as_u64().unwrap_or(0);
    let consistent = audit["consistent"].as_bool() == Some(true);
    check(
        "exact issuance",
        format!("{expected_winners} admitted, ISSUED, rows, public count; audit consistent"),
        format!(
            "{admitted} admitted, {issued} ISSUED, {rows} rows, public count {public_issued}, audit {}",
            if consistent { "consistent" } else { "NOT consistent" }
        ),
        admitted == expected_winners
            && issued == expected_winners
            && rows == expected_winners
            && public_issued == expected_winners
            && consistent,
    );

    let positions: BTreeSet<u32> = seen.winners.values().copied().collect();
    let dense =
        positions.len() as u64 == admitted && positions.iter().copied().eq(1..=admitted as u32);
    check(
        "positions dense",
        format!("exactly 1..={admitted}, each once"),
        match (positions.first(), positions.last()) {
            (Some(a), Some(b)) => format!("{} distinct, {a}..={b}", positions.len()),
            _ => "none".into(),
        },
        dense,
    );

    let again_wrong = seen
        .again
        .iter()
        .filter(|(user, status, position)| match seen.winners.get(user) {
            Some(told) => *status != 200 || *position != Some(*told),
            None => *status != 410,
        })
        .count();
    let losers_wrong: u64 = seen
        .loser_statuses
        .iter()
        .filter(|(s, _)| s.as_str() != "SOLD_OUT")
        .map(|(_, n)| n)
        .sum();
    check(
        "one per user",
        "applying again: winners 200 at their place, others 410 and SOLD_OUT".into(),
        format!(
            "{} applied again, {again_wrong} answered otherwise; {losers_wrong} losers not SOLD_OUT",
            seen.again.len()
        ),
        again_wrong == 0 && losers_wrong == 0,
    );

    let order = order::measure(&seen.crowd, 1);
    check(
        "real-time order",
        "0 admissions placed behind a request sent after their answer".into(),
        format!(
            "{} (overtaken {}, by at most {:.1} ms)",
            order.real_time_violations, order.overtaken, order.max_overtaking_ms
        ),
        order.real_time_violations == 0,
    );

    let mut histograms: BTreeMap<Route, Histogram<u64>> = BTreeMap::new();
    let mut answers: BTreeMap<String, BTreeMap<u16, u64>> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for a in &seen.answers {
        histograms
            .entry(a.route)
            .or_insert_with(new_histogram)
            .saturating_record(a.latency_us);
        *answers
            .entry(route_name(a.route))
            .or_default()
            .entry(a.status)
            .or_default() += 1;
        if !expected(a.route, a.status) {
            *errors
                .entry(format!("{} {}", route_name(a.route), a.status))
                .or_default() += 1;
        }
    }
    let routes: BTreeMap<String, Percentiles> = histograms
        .iter()
        .map(|(r, h)| (route_name(*r), Percentiles::from(h)))
        .collect();
    let p99 = |route| routes.get(&route_name(route)).map_or(0.0, |p| p.p99_ms);
    check(
        "apply p99",
        format!("<= {} ms", opts.max_p99_ms),
        format!("{:.1} ms", p99(Route::Apply)),
        p99(Route::Apply) <= opts.max_p99_ms,
    );
    check(
        "position p99",
        format!("<= {} ms", opts.max_position_p99_ms),
        format!("{:.1} ms", p99(Route::Position)),
        p99(Route::Position) <= opts.max_position_p99_ms,
    );

    let ms = |us: u64| us as f64 / 1000.0;
    let sold_out_ms = seen
        .crowd
        .iter()
        .filter(|s| s.status == 202 && s.position == Some(opts.stock))
        .map(|s| ms(s.done_us.saturating_sub(seen.crowd_started_us)))
        .next();
    if opts.users >= opts.stock {
        let limit = opts.max_sold_out_ms;
        check(
            "sold-out time",
            limit.map_or("reported".into(), |l| format!("<= {l} ms")),
            sold_out_ms.map_or("never sold out".into(), |t| format!("{t:.0} ms")),
            sold_out_ms.is_some_and(|t| limit.is_none_or(|l| t <= l)),
        );
    }

    let last_admission = seen
        .crowd
        .iter()
        .filter(|s| s.status == 202)
        .map(|s| s.done_us)
        .max();
    let drain_ms = (issued == admitted)
        .then(|| seen.issued_us.values().max().copied())
        .flatten()
        .zip(last_admission)
        .map(|(last, admitted_at)| ms(last.saturating_sub(admitted_at)));
    let waiting: Vec<String> = seen
        .not_issued
        .iter()
        .map(|(status, n)| format!("{n} {status}"))
        .collect();
    check(
        "drain time",
        format!(
            "every winner ISSUED <= {} ms after the last admission",
            opts.max_drain_ms
        ),
        match drain_ms {
            Some(t) => format!("{t:.0} ms"),
            None => format!(
                "{} of {admitted} winners not ISSUED when the wait ended: {}",
                admitted - issued,
                waiting.join(", ")
            ),
        },
        matches!(drain_ms, Some(t) if t <= opts.max_drain_ms),
    );

    let error_count: u64 = errors.values().sum();
    check(
        "errors",
        format!("<= {}", opts.max_errors),
        if errors.is_empty() {
            "0".into()
        } else {
            errors
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        },
        error_count <= opts.max_errors,
    );

    Verdict {
        coupon_id: event["id"].as_i64().unwrap_or_default(),
        passed: checks.iter().all(|c| c.passed),
        checks,
        routes,
        answers,
        admitted,
        sold_out_ms,
        drain_ms,
        audit: audit.clone(),
    }
}

impl Verdict {
    pub fn print(&self) {
        println!("rehearsal of event {}", self.coupon_id);
        for c in &self.checks {
            let mark = if c.passed { "PASS  " } else { "BREACH" };
            println!(
                "  {mark} {:<16} {}  (threshold: {})",
                c.name, c.measured, c.threshold
            );
        }
        println!("  latency per route (ms):");
        for (route, p) in &self.routes {
            println!(
                "    {route:<12} n={:<7} p50={:<8.1} p99={:<8.1} max={:.1}",
                p.count, p.p50_ms, p.p99_ms, p.max_ms
            );
        }
        let breached: Vec<&str> = self
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name)
            .collect();
        if breached.is_empty() {
            println!("verdict: PASS");
        } else {
            println!("verdict: FAIL ({})", breached.join(", "));
        }
    }
}

/// `report.json` (the verdict) and `chart.svg` beside it.
pub fn write(verdict: &Verdict, seen: &Observed, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(verdict)?)?;
    super::chart::draw(seen, &out.join("chart.svg"))?;
    eprintln!(
        "rehearse: wrote {0}/report.json and {0}/chart.svg",
        out.display()
    );
    Ok(())
}
