//! Who holds one place in line, for the fairness log's builder when a position has no row.

use super::{Gate, GateError, LOST_PREFIX};
use crate::domain::{CouponId, Position, UserId};

/// The holder of a position, as far as the log needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// A `~lost:` placeholder: the winner was lost with Redis' memory (its score is kept).
    Lost { score_us: i64 },
    /// A winner whose coupon could not be recorded.
    Failed { user: UserId, score_us: i64 },
    /// Anything else: admitted, on its way, or persisted since the caller looked.
    Other,
}

impl Gate {
    /// The holder of `position`, or `None` when nobody is there (yet).
    pub async fn holder_at(
        &self,
        coupon: CouponId,
        position: Position,
    ) -> Result<Option<Holder>, GateError> {
        let keys = self.keys(coupon);
        let rank = isize::try_from(position.get() - 1).unwrap_or(isize::MAX);
        let queue = &keys.queue;
        let at: Vec<(String, f64)> = self
            .run(|mut conn| async move {
                redis::cmd("ZRANGE")
                    .arg(queue)
                    .arg(rank)
                    .arg(rank)
                    .arg("WITHSCORES")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let Some((member, score)) = at.into_iter().next() else {
            return Ok(None);
        };
        let score_us = score as i64;
        if member.starts_with(LOST_PREFIX) {
            return Ok(Some(Holder::Lost { score_us }));
        }
        let status = &keys.status;
        let member = &member;
        let state: Option<String> = self
            .run(|mut conn| async move {
                redis::cmd("HGET")
                    .arg(status)
                    .arg(member)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(Some(match (state.as_deref(), member.parse::<UserId>()) {
            (Some("FAILED"), Ok(user)) => Holder::Failed { user, score_us },
            _ => Holder::Other,
        }))
    }
}
