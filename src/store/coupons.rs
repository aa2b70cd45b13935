use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::{Coupon, CouponId, CouponName, EventWindow, Stock};

/// A validated event definition, not yet stored.
#[derive(Debug, Clone)]
pub struct NewCoupon {
    pub name: CouponName,
    pub stock: Stock,
    pub window: EventWindow,
    /// `APP_GATE__BATCH_WINDOW_US` of the instance creating it (0: batching off).
    pub batch_window_us: u32,
    /// A rehearsal event (see migrations/20261205000001_rehearsal.sql).
    pub rehearsal: bool,
}

#[tracing::instrument(skip_all, fields(stock = new.stock.get()))]
pub async fn insert_coupon(conn: &mut PgConnection, new: NewCoupon) -> sqlx::Result<Coupon> {
    let (id, created_at): (i64, DateTime<Utc>) = sqlx::query_as(
        "INSERT INTO coupon (name, stock, opens_at, closes_at, batch_window_us, rehearsal) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, created_at",
    )
    .bind(new.name.as_str())
    .bind(i64::from(new.stock.get()))
    .bind(new.window.opens_at())
    .bind(new.window.closes_at())
    .bind(i64::from(new.batch_window_us))
    .bind(new.rehearsal)
    .fetch_one(conn)
    .await?;
    let id = CouponId::new(id).map_err(|e| sqlx::Error::Decode(e.into()))?;
    Ok(Coupon {
        id,
        name: new.name,
        stock: new.stock,
        window: new.window,
        created_at,
    })
}

/// A coupon event in the list a dashboard offers.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CouponSummary {
    pub id: i64,
    pub name: String,
    pub stock: i32,
    pub opens_at: Option<DateTime<Utc>>,
    pub closes_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

pub async fn coupon_exists(db: &sqlx::PgPool, coupon: CouponId) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM coupon WHERE id = $1)")
        .bind(coupon.get())
        .fetch_one(db)
        .await
}

/// The batch window an event was created under; `None` for an unknown event.
pub async fn batch_window_us<'e>(
    db: impl sqlx::PgExecutor<'e>,
    coupon: CouponId,
) -> sqlx::Result<Option<u32>> {
    let window: Option<i32> =
        sqlx::query_scalar("SELECT batch_window_us FROM coupon WHERE id = $1")
            .bind(coupon.get())
            .fetch_optional(db)
            .await?;
    Ok(window.map(|w| w.max(0) as u32))
}

/// The list's statement; public so that a test can count its executions on the wire.
pub const LIST_COUPONS_SQL: &str = "SELECT id, name, stock, opens_at, closes_at, created_at \
     FROM coupon WHERE NOT rehearsal ORDER BY id DESC LIMIT $1";

/// The newest events first; rehearsals are not listed.
pub async fn list_coupons(db: &sqlx::PgPool, limit: i64) -> sqlx::Result<Vec<CouponSummary>> {
    sqlx::query_as(LIST_COUPONS_SQL)
        .bind(limit)
        .fetch_all(db)
        .await
}

/// Whether an event is a rehearsal; `None` for an unknown event. The flag never changes.
pub async fn is_rehearsal(db: &sqlx::PgPool, coupon: CouponId) -> sqlx::Result<Option<bool>> {
    sqlx::query_scalar("SELECT rehearsal FROM coupon WHERE id = $1")
        .bind(coupon.get())
        .fetch_optional(db)
        .await
}

/// Deletes a rehearsal event and every row it wrote, locking its row first; `None` when there
/// is no such event, `Some(false)` (nothing deleted) when it is a real one.
pub async fn delete_rehearsal(
    conn: &mut PgConnection,
    coupon: CouponId,
) -> sqlx::Result<Option<bool>> {
    // The log's row first, as the log builder takes it (then the coupon's), so the two never
    // wait for each other in a cycle.
    sqlx::query("SELECT 1 FROM fairness_log WHERE coupon_id = $1 FOR UPDATE")
        .bind(coupon.get())
        .execute(&mut *conn)
        .await?;
    let rehearsal: Option<bool> =
        sqlx::query_scalar("SELECT rehearsal FROM coupon WHERE id = $1 FOR UPDATE")
            .bind(coupon.get())
            .fetch_optional(&mut *conn)
            .await?;
    if rehearsal != Some(true) {
        return Ok(rehearsal);
    }
    for table in ["fairness_leaf", "fairness_log", "coupon_issue"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE coupon_id = $1"))
            .bind(coupon.get())
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("DELETE FROM coupon WHERE id = $1")
        .bind(coupon.get())
        .execute(&mut *conn)
        .await?;
    Ok(Some(true))
}
