//! `POST /coupons/{couponId}/issue`: the hot path. One Redis round trip, no database.
//! Three steps: the rate limits, the gate behind the bulkhead, the answer.

use std::net::IpAddr;

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};

use super::archive;
use super::problem::{declared, ApiError, ErrorCode};
use super::rate_limit::LimitedBy;
use super::security::BearerAuth;
use super::views::ApplicationView;
use super::{coupon_id, ApiTags, AppState};
use crate::domain::{CouponId, UserId};
use crate::gate::{Admission, GateError};
use crate::metrics::ApplyResult;

type ApplyError = ApiError<{ declared::APPLY }>;

#[derive(ApiResponse)]
pub enum ApplyResponse {
    /// Newly admitted: the caller got a place in line; issuance follows within seconds.
    #[oai(status = 202)]
    Admitted(Json<ApplicationView>),
    /// Admitted before: the same ticket with its current status. Nothing new was created.
    #[oai(status = 200)]
    AlreadyAdmitted(Json<ApplicationView>),
}

pub struct ApplyApi;

#[OpenApi(tag = "ApiTags::Applications")]
impl ApplyApi {
    /// Apply for a coupon (user token). First come, first served; one per user.
    #[oai(
        path = "/coupons/:couponId/issue",
        method = "post",
        operation_id = "applyForCoupon"
    )]
    #[tracing::instrument(level = "debug", name = "apply", skip_all, fields(coupon_id = coupon.0, user_id = %auth.0.user))]
    async fn apply(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        /// The coupon event's id.
        #[oai(name = "couponId")]
        coupon: Path<i64>,
        request: &poem::Request,
    ) -> Result<ApplyResponse, ApplyError> {
        let coupon = coupon_id(coupon.0)?;
        let user = auth.0.user;
        state.rehearsals.check(&state.db, &auth.0, coupon).await?;
        let peer = request.remote_addr().as_socket_addr().map(|a| a.ip());
        let forwarded = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        // A rehearsal's crowd comes from the few machines that drive it: the per-address
        // limit (bots rotating accounts) would refuse most of it, and its tokens reach
        // rehearsal events only. The per-user limit still holds.
        let address = (!auth.0.rehearsal)
            .then(|| state.client_address.of(peer, forwarded))
            .flatten();
        check_limits(&state, user, address).await?;
        let admission = match admit(&state, coupon, user).await {
            // A finished event whose Redis copy was retired: PostgreSQL answers, as Redis did.
            Err(GateError::Retired) => archive::archived(&state, coupon, Some(user))
                .await?
                .map_or(Admission::UnknownCoupon, |a| archive::admission_of(&a)),
            other => other?,
        };
        answer(coupon, user, admission)
    }
}

/// Over a bucket: 429 before the gate, so the request never counts and never takes stock.
async fn check_limits(
    state: &AppState,
    user: UserId,
    address: Option<IpAddr>,
) -> Result<(), ApplyError> {
    let Err(limited) = state.limiter.check(user, address).await? else {
        return Ok(());
    };
    state.metrics.apply(ApplyResult::rate_limited);
    let whose = match limited.by {
        LimitedBy::User => "this user",
        LimitedBy::Address => "this client address",
    };
    Err(ApiError::rate_limited(
        limited.retry_after,
        format!("Too many applications from {whose}; nothing was counted. See Retry-After."),
    ))
}

/// The gate's decision, at most `apply_concurrency` at once per instance (the bulkhead), timed
/// and counted.
async fn admit(state: &AppState, coupon: CouponId, user: UserId) -> Result<Admission, GateError> {
    let started = std::time::Instant::now();
    // A sold-out event's losers take no permit and no Redis call (see gate::latch).
    let admission = if state.gate.answers_sold_out(coupon, user) {
        Ok(Admission::SoldOut)
    } else {
        behind_the_bulkhead(state, coupon, user).await
    };
    state
        .metrics
        .apply_seconds
        .observe(started.elapsed().as_secs_f64());
    state.metrics.apply(match &admission {
        Ok(Admission::Admitted { .. }) => ApplyResult::admitted,
        Ok(Admission::AlreadyAdmitted { .. }) => ApplyResult::already,
        Ok(Admission::SoldOut) => ApplyResult::sold_out,
        Ok(Admission::NotOpen) => ApplyResult::not_open,
        Ok(Admission::Closed) => ApplyResult::closed,
        Ok(Admission::UnknownCoupon) => ApplyResult::not_found,
        Err(_) => ApplyResult::error,
    });
    admission
}

async fn behind_the_bulkhead(
    state: &AppState,
    coupon: CouponId,
    user: UserId,
) -> Result<Admission, GateError> {
    let _permit = state
        .apply_permits
        .acquire()
        .await
        .map_err(|e| GateError::Unexpected(e.into()))?;
    let _inside = InFlight::enter(&state.metrics.apply_in_flight);
    state.gate.apply(coupon, user).await
}

/// Counts an application inside the gate for as long as it is there, also when the client
/// goes away and the request is dropped mid-way.
struct InFlight<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn answer(
    coupon: CouponId,
    user: UserId,
    admission: Admission,
) -> Result<ApplyResponse, ApplyError> {
    let view = |ticket, stock| Json(ApplicationView::new(coupon, user, ticket, stock));
    match admission {
        Admission::Admitted { ticket, stock } => Ok(ApplyResponse::Admitted(view(ticket, stock))),
        Admission::AlreadyAdmitted { ticket, stock } => {
            Ok(ApplyResponse::AlreadyAdmitted(view(ticket, stock)))
        }
        Admission::SoldOut => Err(ApiError::new(
            ErrorCode::SoldOut,
            "Every coupon of this event is taken.",
        )),
        Admission::NotOpen => Err(ApiError::new(
            ErrorCode::EventNotOpen,
            "The event has not opened yet; see opensAt.",
        )),
        Admission::Closed => Err(ApiError::new(
            ErrorCode::EventClosed,
            "The event is closed.",
        )),
        Admission::UnknownCoupon => Err(ApiError::no_coupon(coupon)),
    }
}
