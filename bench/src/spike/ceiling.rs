//! The raw ceiling: the same admission script called straight against the same Redis, with the
//! same concurrency and no HTTP, on a throw-away coupon under its own key prefix.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use futures::future::join_all;

use fcfs_coupon::configuration::RedisSettings;
use fcfs_coupon::domain::{Coupon, CouponId, CouponName, EventWindow, Stock, UserId};

/// Admission-script calls per second, for `calls` calls over `concurrency` connections.
pub async fn measure(
    redis: &RedisSettings,
    calls: u32,
    stock: u32,
    concurrency: usize,
) -> anyhow::Result<f64> {
    // The service's own Redis settings (connections included), under a throw-away prefix.
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
    let hold = gate.register(&coupon).await?;
    gate.open(coupon.id, &hold).await?;
    let next = Arc::new(AtomicI64::new(1));
    let started = Instant::now();
    let workers = (0..concurrency).map(|_| {
        let (gate, next) = (gate.clone(), next.clone());
        tokio::spawn(async move {
            loop {
                let user = next.fetch_add(1, Ordering::Relaxed);
                if user > i64::from(calls) {
                    break;
                }
                gate.apply(coupon.id, UserId::new(user)?).await?;
            }
            anyhow::Ok(())
        })
    });
    for worker in join_all(workers).await {
        worker??;
    }
    let elapsed = started.elapsed();
    gate.unregister(coupon.id).await?;
    Ok(f64::from(calls) / elapsed.as_secs_f64())
}
