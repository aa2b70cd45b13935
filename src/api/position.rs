//! `GET /coupons/{couponId}/position`: where the caller stands, read from Redis.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::problem::{ApiError, ErrorCode};
use super::security::BearerAuth;
use super::{coupon_id, ApiTags, AppState};
use crate::domain::{ApplicationStatus, CouponState};
use crate::gate::Snapshot;

/// The caller's place for one coupon event.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct PositionView {
    pub coupon_id: i64,
    pub user_id: i64,
    /// NOT_APPLIED, ADMITTED, PUBLISHED, ISSUED, FAILED, or SOLD_OUT (did not get in, stock gone).
    pub status: ApplicationStatus,
    /// Place in line when admitted.
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
}

pub struct PositionApi;

#[OpenApi(tag = "ApiTags::Applications")]
impl PositionApi {
    /// The caller's status and place in line (user token).
    #[oai(path = "/coupons/:couponId/position", method = "get")]
    #[tracing::instrument(level = "debug", name = "position", skip_all, fields(coupon_id = coupon.0, user_id = %auth.0.user))]
    async fn position(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        /// The coupon event's id.
        #[oai(name = "couponId")]
        coupon: Path<i64>,
    ) -> Result<Json<PositionView>, ApiError> {
        let id = coupon_id(coupon.0)?;
        let user = auth.0.user;
        let snapshot =
            state.gate.snapshot(id, Some(user)).await?.ok_or_else(|| {
                ApiError::new(ErrorCode::CouponNotFound, format!("No coupon {id}."))
            })?;
        let status = status_of(&snapshot);
        Ok(Json(PositionView {
            coupon_id: id.get(),
            user_id: user.get(),
            status,
            position: snapshot.ticket.map(|t| t.position),
            stock: snapshot.coupon.stock.get(),
            admitted: snapshot.admitted,
            issued: snapshot.issued,
            applied_at: snapshot.ticket.map(|t| t.applied_at),
            retry_after_ms: retry_after_ms(&snapshot, status, state.issuer_period.as_millis()),
        }))
    }
}

fn status_of(snapshot: &Snapshot) -> ApplicationStatus {
    match snapshot.ticket {
        Some(ticket) => ticket.status,
        None if snapshot.remaining() == 0 => ApplicationStatus::SoldOut,
        None => ApplicationStatus::NotApplied,
    }
}

/// Admitted and published users hear back about once per issuer tick; a user waiting for the
/// event to open is told when it opens; every other answer is final or needs an apply first.
fn retry_after_ms(snapshot: &Snapshot, status: ApplicationStatus, tick_ms: u128) -> Option<u64> {
    match status {
        ApplicationStatus::Admitted | ApplicationStatus::Published => u64::try_from(tick_ms).ok(),
        ApplicationStatus::NotApplied if snapshot.state() == CouponState::Scheduled => {
            let opens = snapshot.coupon.window.opens_at()?;
            u64::try_from((opens - snapshot.now).num_milliseconds()).ok()
        }
        _ => None,
    }
}
