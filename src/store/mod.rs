//! PostgreSQL: the durable record of coupon events and issued coupons.

mod archive;
mod coupons;
mod issues;
mod recovery;

pub use archive::{archived, mark_retired, Archived};
pub use coupons::{
    batch_window_us, coupon_exists, delete_rehearsal, insert_coupon, is_rehearsal, list_coupons,
    CouponSummary, NewCoupon, LIST_COUPONS_SQL,
};
pub use issues::{
    coupon_issues, is_permanent, persist_batch, record_failed, user_coupons, FailedEvent,
    IssueRecord, IssuedCoupon,
};
pub use recovery::{
    admitted_high, find_coupon, lineage, persisted_winners, record_admitted, set_lineage,
    watched_coupons, PgBooks, Watched,
};

use anyhow::Context;
use sqlx::PgPool;

use crate::domain::InvalidValue;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL cannot be reached (or the pool has no connection free in time).
    #[error("PostgreSQL is unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// A row breaks a rule the table's constraints should have kept.
    #[error("PostgreSQL holds an invalid row")]
    Corrupt(#[from] InvalidValue),
    #[error("PostgreSQL refused a query")]
    Query(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            Self::Unavailable(e)
        } else {
            Self::Query(e)
        }
    }
}

/// Connection trouble, as opposed to a query the database refused.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
    )
}

/// Applies `migrations/` (embedded at build time); safe to run on every start.
pub async fn migrate(db: &PgPool) -> anyhow::Result<()> {
    sqlx::migrate!("./migrations")
        .run(db)
        .await
        .context("applying database migrations")
}
