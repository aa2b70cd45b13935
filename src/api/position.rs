//! `GET /coupons/{couponId}/position`: where the caller stands, read from Redis.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};

use super::archive;
use super::problem::{declared, ApiError};
use super::security::BearerAuth;
use super::views::{ApplicationStatus, PositionView};
use super::{coupon_id, ApiTags, AppState};
use crate::domain::CouponState;
use crate::gate::Snapshot;

/// When a winner whose leaf is not in the log yet may ask again for their receipt.
const RECEIPT_POLL_MS: u64 = 1_000;

type PositionError = ApiError<{ declared::POSITION }>;

#[derive(ApiResponse)]
pub enum PositionResponse {
    /// The caller's status; `retryAfterMs` says when asking again may change it.
    #[oai(status = 200)]
    Position(Json<PositionView>),
}

pub struct PositionApi;

#[OpenApi(tag = "ApiTags::Applications")]
impl PositionApi {
    /// The caller's status and place in line (user token). One Redis read at most; asked
    /// again before `retryAfterMs` (or within a second of a final answer), the same answer
    /// comes from this instance's copy. `?receipt=true` reads PostgreSQL and is limited per
    /// user (429 `RATE_LIMITED` with `Retry-After`).
    #[oai(
        path = "/coupons/:couponId/position",
        method = "get",
        operation_id = "getPosition"
    )]
    #[tracing::instrument(level = "debug", name = "position", skip_all, fields(coupon_id = coupon.0, user_id = %auth.0.user))]
    async fn position(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        /// The coupon event's id.
        #[oai(name = "couponId")]
        coupon: Path<i64>,
        /// `true`: include the receipt (the leaf's fields, the nonce and an inclusion proof)
        /// once `receiptReady`. Asked for, not sent to every poll: it is read from PostgreSQL.
        receipt: Query<Option<bool>>,
    ) -> Result<PositionResponse, PositionError> {
        let id = coupon_id(coupon.0)?;
        let user = auth.0.user;
        state.rehearsals.check(&state.db, &auth.0, id).await?;
        let wants_receipt = receipt.0 == Some(true);
        if !wants_receipt {
            if let Some(answer) = state.user_reads.last_answer(id, user) {
                return Ok(PositionResponse::Position(Json(PositionView::clone(
                    &answer,
                ))));
            }
        }
        let snapshot = archive::snapshot(&state, id, Some(user))
            .await?
            .ok_or_else(|| PositionError::no_coupon(id))?;
        let status = status_of(&snapshot);
        let logged = matches!(
            status,
            ApplicationStatus::Issued | ApplicationStatus::Failed
        );
        let place = snapshot.ticket.map(|t| t.position.get()).filter(|_| logged);
        let receipt_ready = match place {
            Some(p) => super::fairness::receipt_ready(&state, id, p).await,
            None => None,
        };
        let receipt = match place {
            Some(p) if receipt_ready == Some(true) && wants_receipt => {
                state.user_reads.take_db_read(user).map_err(|wait| {
                    PositionError::rate_limited(
                        wait,
                        "Too many receipts asked for; try again later.",
                    )
                })?;
                super::fairness::receipt(&state, id, user, p).await
            }
            _ => None,
        };
        let mut retry_after_ms = retry_after_ms(&snapshot, status, state.status_poll.as_millis());
        if receipt_ready == Some(false) {
            // The builder appends within about a second of the row.
            retry_after_ms = Some(RECEIPT_POLL_MS);
        }
        let answer = PositionView {
            coupon_id: id.get(),
            user_id: user.get(),
            status,
            reason: reason(status).map(str::to_owned),
            position: snapshot.ticket.map(|t| t.position.get()),
            stock: snapshot.coupon.stock.get(),
            admitted: snapshot.admitted,
            issued: snapshot.issued,
            applied_at: snapshot.ticket.map(|t| t.applied_at),
            retry_after_ms,
            receipt_ready,
            receipt,
        };
        if !wants_receipt {
            state.user_reads.keep(id, user, Arc::new(answer.clone()));
        }
        Ok(PositionResponse::Position(Json(answer)))
    }
}

fn status_of(snapshot: &Snapshot) -> ApplicationStatus {
    match snapshot.ticket {
        Some(ticket) => ticket.status.into(),
        None if snapshot.remaining() == 0 => ApplicationStatus::SoldOut,
        None => ApplicationStatus::NotApplied,
    }
}

/// The final answers that are not a coupon, explained; no internal detail, nothing to act on
/// but the support contact the shop gives.
fn reason(status: ApplicationStatus) -> Option<&'static str> {
    match status {
        ApplicationStatus::Failed => Some(
            "Your place was confirmed but the coupon could not be recorded. The shop has been alerted and can issue it.",
        ),
        ApplicationStatus::Lost => Some(
            "Your place was lost in a server failure before it was recorded, and an earlier applicant holds it. No coupon was issued.",
        ),
        _ => None,
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
