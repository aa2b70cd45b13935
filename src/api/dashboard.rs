//! What the live event dashboard reads besides `GET /coupons`: one event's compact stats. The
//! page itself (`GET /dashboard`) is static HTML that polls these public endpoints.

use chrono::{DateTime, Utc};
use poem::web::Html;
use poem::{handler, web::Data};
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::archive;
use super::problem::{declared, ApiError};
use super::views::StateView;
use super::{coupon_id, ApiTags, AppState};
use crate::domain::CouponId;
use crate::gate::{Backlog, GateError};

type StatsError = ApiError<{ declared::READ_COUPON }>;

/// One event's numbers at one instant, cheap to poll every second.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct CouponStats {
    pub coupon_id: i64,
    pub name: String,
    pub stock: u32,
    /// Every application answered, admitted or not.
    pub applications: u64,
    pub admitted: u64,
    /// On Kafka or further.
    pub published: u64,
    /// Written to PostgreSQL.
    pub issued: u32,
    pub pending: u64,
    pub inflight: u64,
    pub remaining: u32,
    pub state: StateView,
    #[oai(skip_serializing_if_is_none)]
    pub opens_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    pub closes_at: Option<DateTime<Utc>>,
    /// Redis' clock at the read, for "time to open".
    pub now: DateTime<Utc>,
    /// The books' equalities the answering instance's watcher finds off past their settle
    /// time (see README, "Invariants, live"); empty when they balance.
    pub violations: Vec<Violation>,
}

/// One equality of the books that does not hold.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct Violation {
    /// `stranded`, `stages`, `issued_count`, `past_stock`, `persisted`, `public_count`,
    /// `positions_dense`, `log_size` or `kafka_lag`.
    pub kind: String,
    /// By how much.
    pub off: u64,
}

#[derive(ApiResponse)]
pub enum StatsResponse {
    /// The event's numbers now, read from Redis.
    #[oai(status = 200)]
    Stats(Json<CouponStats>),
}

pub struct DashboardApi;

#[OpenApi(tag = "ApiTags::Coupons")]
impl DashboardApi {
    /// One event's live numbers for the dashboard (served from Redis).
    #[oai(
        path = "/coupons/:couponId/stats",
        method = "get",
        operation_id = "getCouponStats"
    )]
    async fn stats(
        &self,
        state: Data<&AppState>,
        /// The coupon event's id.
        #[oai(name = "couponId")]
        coupon: Path<i64>,
    ) -> Result<StatsResponse, StatsError> {
        let id = coupon_id(coupon.0)?;
        let stats = (state.stats_cache)
            .get(id, || read_stats(&state, id))
            .await?;
        let stats = Option::as_ref(&stats).ok_or_else(|| StatsError::no_coupon(id))?;
        Ok(StatsResponse::Stats(Json(stats.clone())))
    }
}

/// Two Redis reads (PostgreSQL once retired); served at most once a second per event. `None`:
/// no such event.
async fn read_stats(state: &AppState, id: CouponId) -> Result<Option<CouponStats>, StatsError> {
    let (snapshot, backlog) =
        match tokio::try_join!(state.gate.snapshot(id, None), state.gate.backlog(id)) {
            // Retired: nothing in the pipeline, every winner issued; the application count
            // was kept in PostgreSQL.
            Err(GateError::Retired) => {
                let Some(a) = archive::archived(state, id, None).await? else {
                    return Ok(None);
                };
                let backlog = Backlog {
                    applications: a.applications,
                    admitted: u64::from(a.issued),
                    pending: 0,
                    inflight: 0,
                };
                (Some(archive::snapshot_of(&a)), backlog)
            }
            other => other?,
        };
    let Some(s) = snapshot else {
        return Ok(None);
    };
    Ok(Some(CouponStats {
        coupon_id: id.get(),
        name: s.coupon.name.as_str().to_owned(),
        stock: s.coupon.stock.get(),
        applications: backlog.applications,
        admitted: backlog.admitted,
        published: backlog.published(),
        issued: s.issued,
        pending: backlog.pending,
        inflight: backlog.inflight,
        remaining: s.remaining(),
        state: s.state().into(),
        opens_at: s.coupon.window.opens_at(),
        closes_at: s.coupon.window.closes_at(),
        now: s.now,
        violations: violations(state, id),
    }))
}

fn violations(state: &AppState, id: CouponId) -> Vec<Violation> {
    let found = state.books.as_ref().map(|b| b.violations(id));
    found
        .unwrap_or_default()
        .into_iter()
        .map(|(kind, off)| Violation {
            kind: kind.to_owned(),
            off,
        })
        .collect()
}

/// The live event page: static, no build step; it polls the endpoints above.
#[handler]
pub fn page() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}
