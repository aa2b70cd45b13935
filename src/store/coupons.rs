use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::{Coupon, CouponId, CouponName, EventWindow, Stock};

/// A validated event definition, not yet stored.
#[derive(Debug, Clone)]
pub struct NewCoupon {
    pub name: CouponName,
    pub stock: Stock,
    pub window: EventWindow,
}

#[tracing::instrument(skip_all, fields(stock = new.stock.get()))]
pub async fn insert_coupon(conn: &mut PgConnection, new: NewCoupon) -> sqlx::Result<Coupon> {
    let (id, created_at): (i64, DateTime<Utc>) = sqlx::query_as(
        "INSERT INTO coupon (name, stock, opens_at, closes_at) VALUES ($1, $2, $3, $4) \
         RETURNING id, created_at",
    )
    .bind(new.name.as_str())
    .bind(i64::from(new.stock.get()))
    .bind(new.window.opens_at())
    .bind(new.window.closes_at())
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

/// The newest events first.
pub async fn coupon_exists(db: &sqlx::PgPool, coupon: CouponId) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM coupon WHERE id = $1)")
        .bind(coupon.get())
        .fetch_one(db)
        .await
}

pub async fn list_coupons(db: &sqlx::PgPool, limit: i64) -> sqlx::Result<Vec<CouponSummary>> {
    sqlx::query_as(
        "SELECT id, name, stock, opens_at, closes_at, created_at FROM coupon ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}
