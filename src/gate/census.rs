//! A count of one coupon's books in Redis at one instant (see census.lua), for the watcher's
//! live invariants (`crate::ops::reconcile::books`): O(1) at rest, read from the per-status
//! counts the scripts keep (counts.lua), not from every status.

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
    /// The per-status counts (ISSUED's is the public issued count itself; an event written
    /// before the counts existed is counted by scanning its statuses).
    pub status_admitted: u64,
    pub status_published: u64,
    pub status_issued: u64,
    pub status_failed: u64,
    /// Entries in the status hash: the four counts' sum, unless a status was written or
    /// deleted outside the scripts.
    pub status_entries: u64,
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
            [admitted, lost, public_issued, status_admitted, status_published, status_issued, status_failed, status_entries, stranded] => {
                Some(Census {
                    admitted,
                    lost,
                    public_issued,
                    status_admitted,
                    status_published,
                    status_issued,
                    status_failed,
                    status_entries,
                    stranded,
                })
            }
            _ => None,
        })
    }
}
