//! Issued coupons: written by the consumer in batches, read by the database-backed pages.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool};

use crate::domain::{CouponId, UserId, Winner};

/// Persists a batch in one transaction: a multi-row insert that skips rows already present
/// (a redelivery), and the matching `issued_count` increments. Position and stock constraints
/// fail the whole batch; the caller then isolates the offending row.
#[tracing::instrument(skip_all, fields(rows = issues.len()))]
pub async fn persist_batch(db: &PgPool, issues: &[Winner]) -> sqlx::Result<u64> {
    let mut tx = db.begin().await?;
    let inserted: Vec<(i64,)> = sqlx::query_as(
        "INSERT INTO coupon_issue (coupon_id, user_id, position, applied_at) \
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::int[], $4::timestamptz[]) \
         ON CONFLICT (coupon_id, user_id) DO NOTHING \
         RETURNING coupon_id",
    )
    .bind(issues.iter().map(|i| i.coupon.get()).collect::<Vec<_>>())
    .bind(issues.iter().map(|i| i.user.get()).collect::<Vec<_>>())
    .bind(
        issues
            .iter()
            .map(|i| i.position.get() as i32)
            .collect::<Vec<_>>(),
    )
    .bind(issues.iter().map(|i| i.applied_at).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    let mut per_coupon: BTreeMap<i64, i32> = BTreeMap::new();
    for (coupon,) in &inserted {
        *per_coupon.entry(*coupon).or_default() += 1;
    }
    // `issued_count <= stock` is a CHECK: the database refuses to over-issue a second time.
    sqlx::query(
        "UPDATE coupon SET issued_count = issued_count + n.added \
         FROM UNNEST($1::bigint[], $2::int[]) AS n(id, added) WHERE coupon.id = n.id",
    )
    .bind(per_coupon.keys().copied().collect::<Vec<_>>())
    .bind(per_coupon.values().copied().collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(inserted.len() as u64)
}

/// True when retrying cannot help: the data itself breaks a rule (SQLSTATE class 22 or 23).
pub fn is_permanent(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code.starts_with("22") || code.starts_with("23"))
}

/// A message that can never be persisted, kept for a person to look at.
#[derive(Debug, Clone)]
pub struct FailedEvent<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub error: &'a str,
}

/// PostgreSQL's `text` refuses NUL; a poison message may carry any byte. Refused, the insert
/// would be retried forever and stop the consumer, so NUL is written as the visible `\0`
/// (the payload column is `bytea` and keeps the bytes as they came).
fn text(raw: &str) -> String {
    raw.replace('\0', "\\0")
}

/// Records a failed event once, however often it is redelivered.
pub async fn record_failed(db: &PgPool, event: &FailedEvent<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO failed_event (topic, partition, \"offset\", key, payload, error) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT ON CONSTRAINT failed_event_source_key DO NOTHING",
    )
    .bind(event.topic)
    .bind(event.partition)
    .bind(event.offset)
    .bind(event.key.map(|k| text(&String::from_utf8_lossy(k))))
    .bind(event.payload)
    .bind(text(event.error))
    .execute(db)
    .await?;
    Ok(())
}

/// One of a user's issued coupons.
#[derive(Debug, Clone, FromRow)]
pub struct IssuedCoupon {
    pub coupon_id: i64,
    pub name: String,
    pub position: i32,
    pub applied_at: DateTime<Utc>,
    pub issued_at: DateTime<Utc>,
}

/// One user's coupons, newest first.
pub async fn user_coupons(
    db: &PgPool,
    user: UserId,
    rehearsal: bool,
    limit: i64,
) -> sqlx::Result<Vec<IssuedCoupon>> {
    // A rehearsal user and a real user may share an id: each sees their own events' rows only.
    sqlx::query_as(
        "SELECT i.coupon_id, c.name, i.position, i.applied_at, i.issued_at \
         FROM coupon_issue i JOIN coupon c ON c.id = i.coupon_id \
         WHERE i.user_id = $1 AND c.rehearsal = $3 \
         ORDER BY i.issued_at DESC, i.coupon_id DESC LIMIT $2",
    )
    .bind(user.get())
    .bind(limit)
    .bind(rehearsal)
    .fetch_all(db)
    .await
}

/// A persisted issue: who got the coupon, at which position, when.
#[derive(Debug, Clone, FromRow)]
pub struct IssueRecord {
    pub user_id: i64,
    pub position: i32,
    pub applied_at: DateTime<Utc>,
    pub issued_at: DateTime<Utc>,
}

/// A coupon's persisted issues in arrival order, after `after_position`; `None` when the coupon
/// does not exist.
pub async fn coupon_issues(
    db: &PgPool,
    coupon: CouponId,
    after_position: i32,
    limit: i64,
) -> sqlx::Result<Option<Vec<IssueRecord>>> {
    if !super::coupon_exists(db, coupon).await? {
        return Ok(None);
    }
    let rows = sqlx::query_as(
        "SELECT user_id, position, applied_at, issued_at FROM coupon_issue \
         WHERE coupon_id = $1 AND position > $2 ORDER BY position LIMIT $3",
    )
    .bind(coupon.get())
    .bind(after_position)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(Some(rows))
}
