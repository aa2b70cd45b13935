//! Events whose Redis copy was retired (`APP_REDIS__RETENTION_SECS`): what reads need, from
//! PostgreSQL, so they answer as Redis did before its keys expired.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{find_coupon, StoreError};
use crate::domain::{Coupon, CouponId, InvalidValue, Position, UserId};

/// A finished event as PostgreSQL holds it. Every winner is persisted (the condition for
/// retiring it), so admitted == issued.
#[derive(Debug, Clone)]
pub struct Archived {
    pub coupon: Coupon,
    pub issued: u32,
    pub applications: u64,
    /// The asking user's row, when a user was asked about and won.
    pub ticket: Option<(Position, DateTime<Utc>)>,
}

/// `None` when the coupon does not exist or is not retired.
pub async fn archived(
    db: &PgPool,
    id: CouponId,
    user: Option<UserId>,
) -> Result<Option<Archived>, StoreError> {
    let row: Option<(i32, Option<i64>)> = sqlx::query_as(
        "SELECT issued_count, applications FROM coupon WHERE id = $1 AND retired_at IS NOT NULL",
    )
    .bind(id.get())
    .fetch_optional(db)
    .await?;
    let Some((issued, applications)) = row else {
        return Ok(None);
    };
    let Some(coupon) = find_coupon(db, id).await? else {
        return Ok(None);
    };
    let ticket = match user {
        Some(user) => {
            let row: Option<(i32, DateTime<Utc>)> = sqlx::query_as(
                "SELECT position, applied_at FROM coupon_issue WHERE coupon_id = $1 AND user_id = $2",
            )
            .bind(id.get())
            .bind(user.get())
            .fetch_optional(db)
            .await?;
            row.map(|(position, at)| {
                let position = u32::try_from(position)
                    .map_err(|_| InvalidValue(format!("position {position}")))?;
                Ok::<_, InvalidValue>((Position::new(position)?, at))
            })
            .transpose()?
        }
        None => None,
    };
    Ok(Some(Archived {
        coupon,
        issued: u32::try_from(issued).map_err(|_| InvalidValue(format!("issued {issued}")))?,
        applications: applications.unwrap_or_default().max(0) as u64,
        ticket,
    }))
}

/// Records that the coupon's Redis copy was set to expire, with its application count.
pub async fn mark_retired(db: &PgPool, id: CouponId, applications: u64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE coupon SET retired_at = now(), applications = $2 WHERE id = $1 AND retired_at IS NULL",
    )
    .bind(id.get())
    .bind(i64::try_from(applications).unwrap_or(i64::MAX))
    .execute(db)
    .await?;
    Ok(())
}
