//! PostgreSQL: the durable record of coupon events and issued coupons.

mod coupons;
mod issues;
mod recovery;

pub use coupons::{insert_coupon, list_coupons, CouponSummary, NewCoupon};
pub use issues::{
    coupon_issues, is_permanent, persist_batch, record_failed, user_coupons, FailedEvent,
    IssueRecord, IssuedCoupon, NewIssue,
};
pub use recovery::{all_coupons, find_coupon, persisted_winners};

use anyhow::Context;
use sqlx::PgPool;

/// Applies `migrations/` (embedded at build time); safe to run on every start.
pub async fn migrate(db: &PgPool) -> anyhow::Result<()> {
    sqlx::migrate!("./migrations")
        .run(db)
        .await
        .context("applying database migrations")
}
