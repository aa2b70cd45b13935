//! PostgreSQL: the durable record of coupon events and issued coupons.

mod coupons;

pub use coupons::{insert_coupon, NewCoupon};

use anyhow::Context;
use sqlx::PgPool;

/// Applies `migrations/` (embedded at build time); safe to run on every start.
pub async fn migrate(db: &PgPool) -> anyhow::Result<()> {
    sqlx::migrate!("./migrations")
        .run(db)
        .await
        .context("applying database migrations")
}
