//! What the API answers with: the OpenAPI schemas of the response bodies, built from the
//! domain and store types. Only this module knows their JSON shape.

use chrono::{DateTime, Utc};
use poem_openapi::types::Example;
use poem_openapi::{Enum, Object};

use crate::domain::{CouponId, CouponState, Status, UserId};
use crate::gate::{Snapshot, Ticket};
use crate::store::{CouponSummary, IssueRecord, IssuedCoupon};

/// What an event looks like to a shopper right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "SCREAMING_SNAKE_CASE", rename = "CouponState")]
pub enum StateView {
    Scheduled,
    Open,
    SoldOut,
    Closed,
}

impl From<CouponState> for StateView {
    fn from(s: CouponState) -> Self {
        match s {
            CouponState::Scheduled => Self::Scheduled,
            CouponState::Open => Self::Open,
            CouponState::SoldOut => Self::SoldOut,
            CouponState::Closed => Self::Closed,
        }
    }
}

/// Where the caller stands for one coupon: a winner's status, or why there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApplicationStatus {
    NotApplied,
    Admitted,
    Published,
    Issued,
    Failed,
    /// Was told a place (202), which a Redis failure lost before it was recorded, and an
    /// earlier arrival holds it: no coupon. Only with `APP_REDIS__ACK_REPLICAS=0`.
    Lost,
    /// Did not get in and the stock is gone.
    SoldOut,
}

impl From<Status> for ApplicationStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Admitted => Self::Admitted,
            Status::Published => Self::Published,
            Status::Issued => Self::Issued,
            Status::Failed => Self::Failed,
            Status::Lost => Self::Lost,
        }
    }
}

/// A coupon event and how far it has gone.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", example)]
pub struct CouponView {
    pub id: i64,
    pub name: String,
    pub stock: u32,
    /// Users who got in (at most `stock`).
    pub admitted: u32,
    /// Users whose coupon is written to the database.
    pub issued: u32,
    pub remaining: u32,
    pub state: StateView,
    #[oai(skip_serializing_if_is_none)]
    pub opens_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    pub closes_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// When these numbers were read (Redis' clock): a copy is served for up to a second, so
    /// a client that needs what happened after some instant asks until `asOf` is past it.
    pub as_of: DateTime<Utc>,
    /// The event's fairness log: its size, whether it is complete, its latest checkpoint.
    #[oai(skip_serializing_if_is_none)]
    pub log: Option<super::fairness::LogView>,
}

impl From<&Snapshot> for CouponView {
    fn from(s: &Snapshot) -> Self {
        Self {
            id: s.coupon.id.get(),
            name: s.coupon.name.as_str().to_owned(),
            stock: s.coupon.stock.get(),
            admitted: s.admitted,
            issued: s.issued,
            remaining: s.remaining(),
            state: s.state().into(),
            opens_at: s.coupon.window.opens_at(),
            closes_at: s.coupon.window.closes_at(),
            created_at: s.coupon.created_at,
            as_of: s.now,
            log: None,
        }
    }
}

impl Example for CouponView {
    fn example() -> Self {
        Self {
            id: 1,
            name: "Spring sale".into(),
            stock: 100,
            admitted: 0,
            issued: 0,
            remaining: 100,
            state: StateView::Open,
            opens_at: None,
            closes_at: None,
            created_at: example_time(),
            as_of: example_time(),
            log: None,
        }
    }
}

/// A winner's ticket.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", example)]
pub struct ApplicationView {
    pub coupon_id: i64,
    pub user_id: i64,
    pub status: ApplicationStatus,
    /// Place in line, 1 to `stock`, in order of arrival at Redis.
    pub position: u32,
    pub stock: u32,
    /// When the application reached Redis (its clock, microsecond precision).
    pub applied_at: DateTime<Utc>,
}

impl ApplicationView {
    pub fn new(coupon: CouponId, user: UserId, ticket: Ticket, stock: u32) -> Self {
        Self {
            coupon_id: coupon.get(),
            user_id: user.get(),
            status: ticket.status.into(),
            position: ticket.position.get(),
            stock,
            applied_at: ticket.applied_at,
        }
    }
}

impl Example for ApplicationView {
    fn example() -> Self {
        Self {
            coupon_id: 1,
            user_id: 42,
            status: ApplicationStatus::Admitted,
            position: 1,
            stock: 100,
            applied_at: example_time(),
        }
    }
}

/// The caller's place for one coupon event.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase", example)]
pub struct PositionView {
    pub coupon_id: i64,
    pub user_id: i64,
    /// NOT_APPLIED, ADMITTED, PUBLISHED, ISSUED, FAILED, LOST, or SOLD_OUT (no place, none left).
    pub status: ApplicationStatus,
    /// Why, in words for the user, when the status is FAILED or LOST.
    #[oai(skip_serializing_if_is_none)]
    pub reason: Option<String>,
    /// Place in line when admitted (when LOST: the place the user was told).
    #[oai(skip_serializing_if_is_none)]
    pub position: Option<u32>,
    pub stock: u32,
    pub admitted: u32,
    pub issued: u32,
    /// When the application reached Redis, when admitted.
    #[oai(skip_serializing_if_is_none)]
    pub applied_at: Option<DateTime<Utc>>,
    /// When asking again may give a different answer; absent once the answer is final.
    #[oai(skip_serializing_if_is_none)]
    pub retry_after_ms: Option<u64>,
    /// ISSUED or FAILED, with the fairness log on: whether the place is in the event's log
    /// yet, so that `?receipt=true` returns its receipt.
    #[oai(skip_serializing_if_is_none)]
    pub receipt_ready: Option<bool>,
    /// Asked for with `?receipt=true`, once `receiptReady`: a receipt to keep, which proves the
    /// place (`fcfs-coupon verify --receipt`, or the dashboard's "verify my place").
    #[oai(skip_serializing_if_is_none)]
    pub receipt: Option<super::fairness::ReceiptView>,
}

impl Example for PositionView {
    fn example() -> Self {
        Self {
            coupon_id: 1,
            user_id: 42,
            status: ApplicationStatus::Published,
            reason: None,
            position: Some(1),
            stock: 100,
            admitted: 100,
            issued: 37,
            applied_at: Some(example_time()),
            retry_after_ms: Some(1000),
            receipt_ready: None,
            receipt: None,
        }
    }
}

/// A coupon event in the list a dashboard offers.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", rename = "CouponSummary")]
pub struct SummaryView {
    pub id: i64,
    pub name: String,
    pub stock: i32,
    #[oai(skip_serializing_if_is_none)]
    pub opens_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    pub closes_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<CouponSummary> for SummaryView {
    fn from(c: CouponSummary) -> Self {
        Self {
            id: c.id,
            name: c.name,
            stock: c.stock,
            opens_at: c.opens_at,
            closes_at: c.closes_at,
            created_at: c.created_at,
        }
    }
}

/// One of the caller's issued coupons.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", rename = "MyCoupon")]
pub struct MyCouponView {
    pub coupon_id: i64,
    pub name: String,
    pub position: i32,
    pub applied_at: DateTime<Utc>,
    pub issued_at: DateTime<Utc>,
}

impl From<IssuedCoupon> for MyCouponView {
    fn from(c: IssuedCoupon) -> Self {
        Self {
            coupon_id: c.coupon_id,
            name: c.name,
            position: c.position,
            applied_at: c.applied_at,
            issued_at: c.issued_at,
        }
    }
}

/// A persisted issue: who got the coupon, at which position, when.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", rename = "IssueView")]
pub struct IssueView {
    pub user_id: i64,
    pub position: i32,
    pub applied_at: DateTime<Utc>,
    pub issued_at: DateTime<Utc>,
}

impl From<IssueRecord> for IssueView {
    fn from(r: IssueRecord) -> Self {
        Self {
            user_id: r.user_id,
            position: r.position,
            applied_at: r.applied_at,
            issued_at: r.issued_at,
        }
    }
}

fn example_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_790_000_000, 123_456_000).unwrap_or_default()
}
