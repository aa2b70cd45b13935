//! The same crowd against other routes of the same service right after the spike, so each
//! route's throughput is a ratio to the service's own HTTP floor measured in the same run: the
//! floor (`GET /health/live`, no data store), every loser applying again (all `SOLD_OUT`), and
//! every applicant polling their position. The three take turns, a quarter of the crowd at a
//! time, so the machine's drift during the measurement falls on all of them alike.

use std::sync::Arc;
use std::time::Instant;

use fcfs_coupon::domain::CouponId;
use reqwest::Method;
use serde::Serialize;

use super::crowd::{self, Sample};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rates {
    /// `GET /health/live`, requests/s.
    pub floor: f64,
    /// Losers applying again, requests/s, and how many of those answers were not `SOLD_OUT`.
    pub sold_out: f64,
    pub sold_out_other_answers: u64,
    /// `GET /coupons/{id}/position` by every applicant, requests/s.
    pub position: f64,
}

/// Each route's pass is split into this many slices, run in turn (floor, losers, position,
/// floor, …): a drift in the machine's speed while they are measured falls on all three alike.
const ROUNDS: usize = 4;

pub async fn measure(
    client: &reqwest::Client,
    base: &str,
    coupons: &[CouponId],
    tokens: &Arc<Vec<String>>,
    spike: &[Sample],
    concurrency: usize,
) -> Rates {
    // Applicant i applied to event i mod K; each pass pairs token i with its URL.
    let event = |user: usize| coupons[user % coupons.len()];
    let everyone = |method, path: &dyn Fn(CouponId) -> String| Pass {
        method,
        urls: (0..tokens.len()).map(|u| path(event(u))).collect(),
        tokens: tokens.to_vec(),
    };
    let losers: Vec<usize> = spike
        .iter()
        .filter(|s| s.status == 410)
        .map(|s| s.user as usize)
        .collect();
    let passes = [
        everyone(Method::GET, &|_| format!("{base}/health/live")),
        Pass {
            method: Method::POST,
            urls: losers
                .iter()
                .map(|u| format!("{base}/coupons/{}/issue", event(*u)))
                .collect(),
            tokens: losers.iter().map(|u| tokens[*u].clone()).collect(),
        },
        everyone(Method::GET, &|c| format!("{base}/coupons/{c}/position")),
    ];
    let mut totals: [Totals; 3] = Default::default();
    for round in 0..ROUNDS {
        for (pass, total) in passes.iter().zip(totals.iter_mut()) {
            let (urls, tokens) = (slice(&pass.urls, round), slice(&pass.tokens, round));
            let started = Instant::now();
            let samples = crowd::run(
                client,
                pass.method.clone(),
                urls,
                tokens,
                concurrency,
                started,
            )
            .await;
            total.seconds += started.elapsed().as_secs_f64();
            total.samples.extend(samples);
        }
    }
    let [floor, sold_out, position] = totals;
    Rates {
        floor: floor.rate(),
        sold_out: sold_out.rate(),
        sold_out_other_answers: sold_out.samples.iter().filter(|s| s.status != 410).count() as u64,
        position: position.rate(),
    }
}

/// One route's crowd: request i is token i on URL i.
struct Pass {
    method: Method,
    urls: Vec<String>,
    tokens: Vec<String>,
}

/// The `round`-th of `ROUNDS` slices of `items`.
fn slice(items: &[String], round: usize) -> Arc<Vec<String>> {
    let size = items.len().div_ceil(ROUNDS);
    Arc::new(
        items
            .iter()
            .skip(round * size)
            .take(size)
            .cloned()
            .collect(),
    )
}

#[derive(Default)]
struct Totals {
    seconds: f64,
    samples: Vec<Sample>,
}

impl Totals {
    fn rate(&self) -> f64 {
        self.samples.len() as f64 / self.seconds.max(1e-9)
    }
}
