//! A count of one coupon's books in Redis at one instant (see census.lua), for the watcher's
//! live invariants (`crate::ops::reconcile::books`).

use std::sync::LazyLock;

use redis::Script;

use super::{Gate, GateError};
use crate::domain::CouponId;

static CENSUS: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("census.lua")));

/// What Redis holds of one coupon, counted in one atomic read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Census {
    /// Queue members: winners and lost placeholders.
    pub admitted: u64,
    /// Placeholders for positions whose winner a restore could not bring back.
    pub lost: u64,
    /// The public issued count (the meta hash's `issued`).
    pub public_issued: u64,
    pub status_admitted: u64,
    pub status_published: u64,
    pub status_issued: u64,
    pub status_failed: u64,
    /// Statuses that are none of the four.
    pub status_other: u64,
    /// ADMITTED winners neither pending nor in flight: nobody will publish them.
    pub stranded: u64,
}

impl Gate {
    /// The coupon's census, or `None` when Redis lacks it or holds it for a restore.
    pub async fn census(&self, coupon: CouponId) -> Result<Option<Census>, GateError> {
        let keys = self.keys(coupon);
        let keys = &keys;
        let reply: Vec<u64> = self
            .run(|mut conn| async move {
                CENSUS
                    .key(&keys.meta)
                    .key(&keys.queue)
                    .key(&keys.pending)
                    .key(&keys.inflight)
                    .key(&keys.status)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(match reply[..] {
            [admitted, lost, public_issued, status_admitted, status_published, status_issued, status_failed, status_other, stranded] => {
                Some(Census {
                    admitted,
                    lost,
                    public_issued,
                    status_admitted,
                    status_published,
                    status_issued,
                    status_failed,
                    status_other,
                    stranded,
                })
            }
            _ => None,
        })
    }
}
