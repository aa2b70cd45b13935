//! What the events keep in Redis once every winner is persisted (until their retention ends):
//! the bytes of their keys, exactly (`MEMORY USAGE … SAMPLES 0`), per admitted winner.

use fcfs_coupon::configuration::RedisSettings;
use fcfs_coupon::domain::CouponId;
use fcfs_coupon::gate::Gate;

pub async fn redis_bytes_per_winner(
    redis: &RedisSettings,
    gate: &Gate,
    coupons: &[CouponId],
    winners: u64,
) -> anyhow::Result<f64> {
    let mut conn = redis.connect().await?;
    let mut bytes = 0;
    for coupon in coupons {
        for key in gate.keys(*coupon).all() {
            let used: Option<u64> = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .arg("SAMPLES")
                .arg(0)
                .query_async(&mut conn)
                .await?;
            bytes += used.unwrap_or_default();
        }
    }
    Ok(bytes as f64 / winners.max(1) as f64)
}
