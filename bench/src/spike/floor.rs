//! The same crowd against other routes of the same service right after the spike, so each
//! route's throughput is a ratio to the service's own HTTP floor measured in the same run: the
//! floor (`GET /health/live`, no data store), every loser applying again (all `SOLD_OUT`), and
//! every applicant polling their position.

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

pub async fn measure(
    client: &reqwest::Client,
    base: &str,
    coupons: &[CouponId],
    tokens: &Arc<Vec<String>>,
    spike: &[Sample],
    concurrency: usize,
) -> Rates {
    // Applicant i applied to event i mod K; each list below pairs token i with its URL.
    let event = |user: usize| coupons[user % coupons.len()];
    let everyone = |path: &dyn Fn(CouponId) -> String| -> Arc<Vec<String>> {
        Arc::new((0..tokens.len()).map(|u| path(event(u))).collect())
    };
    let floor = everyone(&|_| format!("{base}/health/live"));
    let (floor, _) = rate(client, Method::GET, floor, tokens.clone(), concurrency).await;

    let losers: Vec<usize> = spike
        .iter()
        .filter(|s| s.status == 410)
        .map(|s| s.user as usize)
        .collect();
    let urls = losers
        .iter()
        .map(|u| format!("{base}/coupons/{}/issue", event(*u)))
        .collect();
    let loser_tokens = losers.iter().map(|u| tokens[*u].clone()).collect();
    let (sold_out, answers) = rate(
        client,
        Method::POST,
        Arc::new(urls),
        Arc::new(loser_tokens),
        concurrency,
    )
    .await;

    let position = everyone(&|c| format!("{base}/coupons/{c}/position"));
    let (position, _) = rate(client, Method::GET, position, tokens.clone(), concurrency).await;
    Rates {
        floor,
        sold_out,
        sold_out_other_answers: answers.iter().filter(|s| s.status != 410).count() as u64,
        position,
    }
}

/// Requests per second of one crowd pass, and its answers.
async fn rate(
    client: &reqwest::Client,
    method: Method,
    urls: Arc<Vec<String>>,
    tokens: Arc<Vec<String>>,
    concurrency: usize,
) -> (f64, Vec<Sample>) {
    let started = Instant::now();
    let samples = crowd::run(client, method, urls, tokens, concurrency, started).await;
    let seconds = started.elapsed().as_secs_f64();
    (samples.len() as f64 / seconds.max(1e-9), samples)
}
