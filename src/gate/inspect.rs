//! A whole coupon's Redis state in one consistent read, for the audit.

use std::collections::HashMap;

use super::{Gate, GateError};
use crate::domain::CouponId;

#[derive(Debug, Clone, Default)]
pub struct GateState {
    /// None when Redis holds no definition for the coupon (lost, or held for restoring).
    pub stock: Option<u32>,
    pub recovering: bool,
    /// Its Redis copy was retired after it finished (set by the audit, from PostgreSQL).
    pub retired: bool,
    /// The `issued` counter the consumer's acknowledgements keep.
    pub issued_counter: u64,
    /// The other per-status counts (see counts.lua): ADMITTED, PUBLISHED, FAILED; `None` for
    /// a coupon written before the counts existed. Signed: a count gone wrong may be below 0.
    pub status_counters: Option<[i64; 3]>,
    /// Queue members in arrival order (rank + 1 = position).
    pub queue: Vec<String>,
    /// Their scores: when each was admitted, µs since the epoch.
    pub admitted_at_us: Vec<i64>,
    pub statuses: HashMap<String, String>,
    pub pending: Vec<String>,
    /// Claimed members and their lease deadlines (ms since the epoch).
    pub inflight: Vec<(String, i64)>,
    /// Redis' clock, ms since the epoch.
    pub now_ms: i64,
}

impl Gate {
    /// Reads every key of the coupon in one MULTI, so the parts agree with each other.
    pub async fn inspect(&self, coupon: CouponId) -> Result<GateState, GateError> {
        let keys = self.keys(coupon);
        let keys = &keys;
        type Reply = (
            (
                Option<u32>,
                Option<String>,
                Option<u64>,
                Option<i64>,
                Option<i64>,
                Option<i64>,
            ),
            Vec<(String, f64)>,
            HashMap<String, String>,
            Vec<String>,
            Vec<(String, i64)>,
            (i64, i64),
        );
        let (meta, queue, statuses, pending, inflight, time): Reply = self
            .run(|mut conn| async move {
                redis::pipe()
                    .atomic()
                    .cmd("HMGET")
                    .arg(&keys.meta)
                    .arg(&[
                        "stock",
                        "recovering",
                        "issued",
                        "count:ADMITTED",
                        "count:PUBLISHED",
                        "count:FAILED",
                    ])
                    .zrange_withscores(&keys.queue, 0, -1)
                    .hgetall(&keys.status)
                    .lrange(&keys.pending, 0, -1)
                    .zrange_withscores(&keys.inflight, 0, -1)
                    .cmd("TIME")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(GateState {
            stock: meta.0,
            recovering: meta.1.is_some(),
            retired: false,
            issued_counter: meta.2.unwrap_or_default(),
            status_counters: meta
                .3
                .map(|admitted| [admitted, meta.4.unwrap_or(0), meta.5.unwrap_or(0)]),
            admitted_at_us: queue.iter().map(|(_, score)| *score as i64).collect(),
            queue: queue.into_iter().map(|(user, _)| user).collect(),
            statuses,
            pending,
            inflight,
            now_ms: time.0 * 1000 + time.1 / 1000,
        })
    }
}
