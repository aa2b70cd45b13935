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
}

#[tracing::instrument(skip_all, fields(stock = new.stock.get()))]
pub async fn insert_coupon(conn: &mut PgConnection, new: NewCoupon) -> sqlx::Result<Coupon> {
    let (id, created_at): (i64, DateTime<Utc>) = sqlx::query_as(
        "INSERT INTO coupon (name, stock, opens_at, closes_at, batch_window_us) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id, created_at",
    )
    .bind(new.name.as_str())
    .bind(i64::from(new.stock.get()))
    .bind(new.window.opens_at())
    .bind(new.window.closes_at())
    .bind(i64::from(new.batch_window_us))
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

/// The newest events first.
pub async fn list_coupons(db: &sqlx::PgPool, limit: i64) -> sqlx::Result<Vec<CouponSummary>> {
    sqlx::query_as(
        "SELECT id, name, stock, opens_at, closes_at, created_at FROM coupon ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}
