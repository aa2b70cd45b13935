//! `POST /coupons/{couponId}/issue`: the hot path. One Redis round trip, no database.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::problem::{ApiError, ErrorCode};
use super::rate_limit::LimitedBy;
use super::security::BearerAuth;
use super::{coupon_id, ApiTags, AppState};
use crate::domain::{ApplicationStatus, CouponId, UserId};
use crate::gate::{Admission, Ticket};
use crate::metrics::ApplyResult;

/// A winner's ticket.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
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
    fn new(coupon: CouponId, user: UserId, ticket: Ticket, stock: u32) -> Json<Self> {
        Json(Self {
            coupon_id: coupon.get(),
            user_id: user.get(),
            status: ticket.status,
            position: ticket.position,
            stock,
            applied_at: ticket.applied_at,
        })
    }
}

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
    #[oai(path = "/coupons/:couponId/issue", method = "post")]
    #[tracing::instrument(level = "debug", name = "apply", skip_all, fields(coupon_id = coupon.0, user_id = %auth.0.user))]
    async fn apply(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        /// The coupon event's id.
        #[oai(name = "couponId")]
        coupon: Path<i64>,
        request: &poem::Request,
    ) -> Result<ApplyResponse, ApiError> {
        let coupon = coupon_id(coupon.0)?;
        let user = auth.0.user;
        let address = request.remote_addr().as_socket_addr().map(|a| a.ip());
        if let Err(limited) = state.limiter.check(user, address) {
            state.metrics.apply(ApplyResult::rate_limited);
            let whose = match limited.by {
                LimitedBy::User => "this user",
                LimitedBy::Address => "this client address",
            };
            return Err(ApiError::rate_limited(
                limited.retry_after,
                format!(
                    "Too many applications from {whose}; nothing was counted. See Retry-After."
                ),
            ));
        }
        let started = std::time::Instant::now();
        let _permit = state
            .apply_permits
            .acquire()
            .await
            .map_err(|e| ApiError::internal(e.into()))?;
        let admission = state.gate.apply(coupon, user).await;
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
        match admission? {
            Admission::Admitted { ticket, stock } => Ok(ApplyResponse::Admitted(
                ApplicationView::new(coupon, user, ticket, stock),
            )),
            Admission::AlreadyAdmitted { ticket, stock } => Ok(ApplyResponse::AlreadyAdmitted(
                ApplicationView::new(coupon, user, ticket, stock),
            )),
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
            Admission::UnknownCoupon => Err(ApiError::new(
                ErrorCode::CouponNotFound,
                format!("No coupon {coupon}."),
            )),
        }
    }
}
