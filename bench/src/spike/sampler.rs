//! Samples, every 100 ms, how far the pipeline has come and the service's memory.

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use fcfs_coupon::domain::CouponId;
use fcfs_coupon::gate::Gate;

pub const EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Seconds after the crowd started.
    pub t: f64,
    pub admitted: u64,
    pub published: u64,
    pub persisted: u64,
    pub rss_mib: Option<f64>,
}

pub async fn run(
    gate: Gate,
    db: PgPool,
    coupons: Vec<CouponId>,
    service_pid: Option<u32>,
    started: Instant,
    stop: CancellationToken,
) -> Vec<Progress> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(EVERY);
    while !stop.is_cancelled() {
        tick.tick().await;
        let (mut admitted, mut published) = (0, 0);
        for coupon in &coupons {
            let backlog = gate.backlog(*coupon).await.unwrap_or_default();
            admitted += backlog.admitted;
            published += backlog.published();
        }
        let ids: Vec<i64> = coupons.iter().map(|c| c.get()).collect();
        let persisted: i64 =
            sqlx::query_scalar("SELECT count(*) FROM coupon_issue WHERE coupon_id = ANY($1)")
                .bind(ids)
                .fetch_one(&db)
                .await
                .unwrap_or_default();
        if samples.len() % 10 == 0 {
            eprintln!(
                "bench: t={:>5.1}s admitted={:<7} published={:<7} persisted={}",
                started.elapsed().as_secs_f64(),
                admitted,
                published,
                persisted
            );
        }
        samples.push(Progress {
            t: started.elapsed().as_secs_f64(),
            admitted,
            published,
            persisted: persisted as u64,
            rss_mib: service_pid.and_then(rss_mib),
        });
    }
    samples
}

/// Resident memory of a process, from /proc (Linux).
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}
