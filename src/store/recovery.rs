//! What reconciliation and the audit read back from PostgreSQL.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::StoreError;
use crate::domain::{
    Coupon, CouponId, CouponName, EventWindow, InvalidValue, PersistedWinner, Position, Stock,
    UserId,
};

#[derive(sqlx::FromRow)]
struct CouponRow {
    id: i64,
    name: String,
    stock: i32,
    opens_at: Option<DateTime<Utc>>,
    closes_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl CouponRow {
    /// The table's CHECKs hold the same rules as the domain types; a row that breaks them is
    /// a corrupt database, reported rather than skipped.
    fn into_coupon(self) -> Result<Coupon, InvalidValue> {
        Ok(Coupon {
            id: CouponId::new(self.id)?,
            name: CouponName::new(&self.name)?,
            stock: Stock::new(i64::from(self.stock))?,
            window: EventWindow::new(self.opens_at, self.closes_at)?,
            created_at: self.created_at,
        })
    }
}

const COUPON_COLUMNS: &str = "id, name, stock, opens_at, closes_at, created_at";

/// A coupon as the Redis watcher needs it (see `crate::ops::reconcile`).
#[derive(Debug, Clone)]
pub struct Watched {
    pub coupon: Coupon,
    /// The highest persisted position (0 for none): Redis admitted fewer means it regressed.
    pub last_position: u32,
    pub issued_count: u32,
    /// The highest position its gate was ever seen to hand out (see `record_admitted`).
    pub admitted_high: u32,
    /// When its Redis copy was retired (set to expire): reads come from PostgreSQL once the
    /// keys are gone.
    pub retired_at: Option<DateTime<Utc>>,
    /// The live books' PostgreSQL side, read in the same statement (one snapshot); counted
    /// only for the events whose books are checked (see [`watched_coupons`]).
    pub books: Option<PgBooks>,
}

/// A coupon's persisted winners as the live invariants count them (see
/// `crate::ops::reconcile::books`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgBooks {
    /// Rows in `coupon_issue`; `None` when not counted this time.
    pub rows: Option<u32>,
    /// The fairness log's size, when the event has a log.
    pub log_size: Option<u64>,
}

/// How long after its retirement an event's books are still checked (see
/// `crate::ops::reconcile::books`): retirement comes as soon as its last winner is persisted,
/// which is when the settled equalities can first be judged.
pub const BOOKS_AFTER_RETIREMENT_SECS: i64 = 600;

/// Every coupon, with what the watcher compares Redis with. One index probe per coupon; the
/// books for events running, retired within [`BOOKS_AFTER_RETIREMENT_SECS`], or in
/// `books_open` (a violation still reported), their rows counted unless in `counted_recently`.
pub async fn watched_coupons(
    db: &PgPool,
    books_open: &[i64],
    counted_recently: &[i64],
) -> Result<Vec<Watched>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        coupon: CouponRow,
        last_position: i32,
        issued_count: i32,
        admitted_high: i32,
        retired_at: Option<DateTime<Utc>>,
        checked: bool,
        rows: Option<i64>,
        log_size: Option<i64>,
    }
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COUPON_COLUMNS}, issued_count, admitted_high, retired_at, \
         COALESCE((SELECT max(position) FROM coupon_issue i WHERE i.coupon_id = coupon.id), 0) \
         AS last_position, \
         checked, \
         CASE WHEN checked AND NOT id = ANY($3) \
           THEN (SELECT count(*) FROM coupon_issue i WHERE i.coupon_id = coupon.id) END AS rows, \
         (SELECT size FROM fairness_log l WHERE l.coupon_id = coupon.id) AS log_size \
         FROM (SELECT *, retired_at IS NULL \
           OR retired_at > now() - make_interval(secs => $1) OR id = ANY($2) AS checked \
           FROM coupon) coupon ORDER BY id"
    ))
    .bind(BOOKS_AFTER_RETIREMENT_SECS as f64)
    .bind(books_open)
    .bind(counted_recently)
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(Watched {
                coupon: row.coupon.into_coupon()?,
                last_position: non_negative(row.last_position)?,
                issued_count: non_negative(row.issued_count)?,
                admitted_high: non_negative(row.admitted_high)?,
                retired_at: row.retired_at,
                books: row
                    .checked
                    .then(|| {
                        Ok::<_, InvalidValue>(PgBooks {
                            rows: row
                                .rows
                                .map(|n| {
                                    u32::try_from(n)
                                        .map_err(|_| InvalidValue(format!("row count {n}")))
                                })
                                .transpose()?,
                            log_size: row.log_size.map(|s| s.max(0) as u64),
                        })
                    })
                    .transpose()?,
            })
        })
        .collect::<Result<_, InvalidValue>>()
        .map_err(Into::into)
}

/// Raises each coupon's `admitted_high` to what its gate was seen to admit (never lowers it):
/// one statement for every coupon that moved.
pub async fn record_admitted(db: &PgPool, seen: &[(CouponId, u32)]) -> Result<(), StoreError> {
    if seen.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = seen.iter().map(|(c, _)| c.get()).collect();
    let counts: Vec<i32> = seen
        .iter()
        .map(|(_, n)| i32::try_from(*n).unwrap_or(i32::MAX))
        .collect();
    sqlx::query(
        "UPDATE coupon SET admitted_high = GREATEST(coupon.admitted_high, s.n) \
         FROM unnest($1::bigint[], $2::int[]) AS s(id, n) WHERE coupon.id = s.id",
    )
    .bind(&ids)
    .bind(&counts)
    .execute(db)
    .await?;
    Ok(())
}

/// The highest position a coupon's gate was ever seen to hand out.
pub async fn admitted_high(db: &PgPool, coupon: CouponId) -> Result<u32, StoreError> {
    let high: i32 = sqlx::query_scalar("SELECT admitted_high FROM coupon WHERE id = $1")
        .bind(coupon.get())
        .fetch_one(db)
        .await?;
    Ok(non_negative(high)?)
}

/// The Redis server identity last seen for a key prefix.
pub async fn lineage(db: &PgPool, prefix: &str) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT server FROM redis_lineage WHERE key_prefix = $1")
            .bind(prefix)
            .fetch_optional(db)
            .await?,
    )
}

/// Remembers the Redis server identity seen now for a key prefix, if PostgreSQL still has
/// `before` (`None`: none yet); a look that lost that race leaves the newer identity alone.
pub async fn set_lineage(
    db: &PgPool,
    prefix: &str,
    before: Option<&str>,
    server: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO redis_lineage (key_prefix, server) VALUES ($1, $3) \
         ON CONFLICT (key_prefix) DO UPDATE SET server = $3, seen_at = now() \
         WHERE redis_lineage.server IS NOT DISTINCT FROM $2",
    )
    .bind(prefix)
    .bind(before)
    .bind(server)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn find_coupon(db: &PgPool, id: CouponId) -> Result<Option<Coupon>, StoreError> {
    let row: Option<CouponRow> = sqlx::query_as(&format!(
        "SELECT {COUPON_COLUMNS} FROM coupon WHERE id = $1"
    ))
    .bind(id.get())
    .fetch_optional(db)
    .await?;
    Ok(row.map(CouponRow::into_coupon).transpose()?)
}

/// A coupon's persisted winners in ascending position, with the counter the consumer keeps.
pub async fn persisted_winners(
    db: &PgPool,
    coupon: CouponId,
) -> Result<(Vec<PersistedWinner>, u32), StoreError> {
    let rows: Vec<(i64, i32, DateTime<Utc>)> = sqlx::query_as(
        "SELECT user_id, position, applied_at FROM coupon_issue WHERE coupon_id = $1 ORDER BY position",
    )
    .bind(coupon.get())
    .fetch_all(db)
    .await?;
    let issued_count: i32 = sqlx::query_scalar("SELECT issued_count FROM coupon WHERE id = $1")
        .bind(coupon.get())
        .fetch_one(db)
        .await?;
    let winners = rows
        .into_iter()
        .map(|(user, position, applied_at)| {
            Ok(PersistedWinner {
                user: UserId::new(user)?,
                position: Position::new(non_negative(position)?)?,
                applied_at,
            })
        })
        .collect::<Result<_, InvalidValue>>()?;
    Ok((winners, non_negative(issued_count)?))
}

fn non_negative(value: i32) -> Result<u32, InvalidValue> {
    u32::try_from(value).map_err(|_| InvalidValue(format!("negative count {value}")))
}
