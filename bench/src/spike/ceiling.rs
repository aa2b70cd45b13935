//! The raw ceiling: the same admission script called straight against the same Redis, with the
//! same concurrency and no HTTP, on a throw-away coupon under its own key prefix; one
//! application per call (`measure`), or batches of them as the batched gate sends (`batched`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use futures::future::join_all;
use serde::Serialize;

use fcfs_coupon::configuration::{RedisMode, RedisSettings};
use fcfs_coupon::domain::{Coupon, CouponId, CouponName, EventWindow, Stock, UserId};
use fcfs_coupon::gate::Gate;

/// Admission-script calls per second, for `calls` calls over `concurrency` connections.
pub async fn measure(
    redis: &RedisSettings,
    calls: u32,
    stock: u32,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let (gate, coupon) = throwaway(redis, stock).await?;
    let started = Instant::now();
    run(&gate, coupon, calls, concurrency, 1).await?;
    let elapsed = started.elapsed();
    gate.unregister(coupon).await?;
    Ok(f64::from(calls) / elapsed.as_secs_f64())
}

/// One event's admissions per second through the batched script, `batch` applications a call,
/// every one of them admitted (the stock is the applications).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Batched {
    pub batch: usize,
    pub admissions_per_sec: f64,
    /// Redis' own time in the script per admission (`INFO commandstats`); one server only.
    pub redis_usec_per_admission: Option<f64>,
}

pub async fn batched(
    redis: &RedisSettings,
    applications: u32,
    concurrency: usize,
    batch: usize,
) -> anyhow::Result<Batched> {
    let (gate, coupon) = throwaway(redis, applications).await?;
    let single = redis.mode != RedisMode::Cluster;
    let before = if single {
        script_usec(redis).await?
    } else {
        0.0
    };
    let started = Instant::now();
    run(&gate, coupon, applications, concurrency, batch).await?;
    let elapsed = started.elapsed();
    let spent = if single {
        script_usec(redis).await? - before
    } else {
        0.0
    };
    let admitted: u64 = redis::cmd("ZCARD")
        .arg(gate.keys(coupon).queue)
        .query_async(&mut redis.connect().await?)
        .await?;
    gate.unregister(coupon).await?;
    anyhow::ensure!(
        admitted == u64::from(applications),
        "{admitted} of {applications} admitted"
    );
    Ok(Batched {
        batch,
        admissions_per_sec: f64::from(applications) / elapsed.as_secs_f64(),
        redis_usec_per_admission: single.then(|| spent / f64::from(applications)),
    })
}

/// Microseconds Redis has spent in `EVALSHA` since it started (every script; the bench's own
/// prefix is the only one busy while it runs).
pub async fn script_usec(redis: &RedisSettings) -> anyhow::Result<f64> {
    let mut conn = redis.connect().await?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:"))
        .and_then(|stats| stats.split(',').find_map(|f| f.strip_prefix("usec=")))
        .and_then(|usec| usec.parse().ok())
        .unwrap_or(0.0))
}

/// A gate on the service's own Redis settings (connections included), under a throw-away
/// prefix, and an open event of `stock` on it.
async fn throwaway(redis: &RedisSettings, stock: u32) -> anyhow::Result<(Gate, CouponId)> {
    let mut settings = redis.clone();
    settings.key_prefix = format!("bench-ceiling-{}", std::process::id());
    let gate = settings.gate()?;
    let coupon = Coupon {
        id: CouponId::new(1)?,
        name: CouponName::new("ceiling")?,
        stock: Stock::new(stock.into())?,
        window: EventWindow::default(),
        created_at: Utc::now(),
    };
    gate.unregister(coupon.id).await?;
    let hold = gate.register(&coupon).await?;
    gate.open(coupon.id, &hold).await?;
    Ok((gate, coupon.id))
}

/// Users 1..=`applications` apply, `batch` to a call, over `concurrency` workers.
async fn run(
    gate: &Gate,
    coupon: CouponId,
    applications: u32,
    concurrency: usize,
    batch: usize,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicI64::new(1));
    let last = i64::from(applications);
    let workers = (0..concurrency).map(|_| {
        let (gate, next) = (gate.clone(), next.clone());
        tokio::spawn(async move {
            loop {
                let first = next.fetch_add(batch as i64, Ordering::Relaxed);
                if first > last {
                    break;
                }
                let users = (first..(first + batch as i64).min(last + 1))
                    .map(UserId::new)
                    .collect::<Result<Vec<_>, _>>()?;
                gate.apply_batch(coupon, &users).await?;
            }
            anyhow::Ok(())
        })
    });
    for worker in join_all(workers).await {
        worker??;
    }
    Ok(())
}
