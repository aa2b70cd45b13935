//! `POST /coupons` (admin) and `GET /coupons/{couponId}`.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::problem::{ApiError, ErrorCode};
use super::security::BearerAuth;
use super::{coupon_id, ApiTags, AppState};
use crate::domain::{CouponName, CouponState, EventWindow, Stock};
use crate::gate::Snapshot;
use crate::store::{self, NewCoupon};

/// A new coupon event.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateCoupon {
    /// Shown to shoppers; 1 to 200 characters.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: String,
    /// How many users get a coupon.
    #[oai(validator(minimum(value = "1"), maximum(value = "10000000")))]
    pub stock: i64,
    /// Applications before this instant answer 409 EVENT_NOT_OPEN. Absent: open now.
    #[oai(skip_serializing_if_is_none)]
    pub opens_at: Option<DateTime<Utc>>,
    /// Applications from this instant on answer 409 EVENT_CLOSED. Absent: never closes.
    #[oai(skip_serializing_if_is_none)]
    pub closes_at: Option<DateTime<Utc>>,
}

/// A coupon event and how far it has gone.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct CouponView {
    pub id: i64,
    pub name: String,
    pub stock: u32,
    /// Users who got in (at most `stock`).
    pub admitted: u32,
    /// Users whose coupon is written to the database.
    pub issued: u32,
    pub remaining: u32,
    pub state: CouponState,
    #[oai(skip_serializing_if_is_none)]
    pub opens_at: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    pub closes_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
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
            state: s.state(),
            opens_at: s.coupon.window.opens_at(),
            closes_at: s.coupon.window.closes_at(),
            created_at: s.coupon.created_at,
        }
    }
}

#[derive(ApiResponse)]
pub enum CreatedResponse {
    /// The event exists and accepts applications within its window.
    #[oai(status = 201)]
    Created(Json<CouponView>),
}

pub struct CouponsApi;

#[OpenApi(tag = "ApiTags::Coupons")]
impl CouponsApi {
    /// Create a coupon event (admin token).
    #[oai(path = "/coupons", method = "post")]
    #[tracing::instrument(name = "create_coupon", skip_all)]
    async fn create(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        body: Json<CreateCoupon>,
    ) -> Result<CreatedResponse, ApiError> {
        auth.require_admin()?;
        let new = NewCoupon {
            name: CouponName::new(&body.name).map_err(ApiError::invalid)?,
            stock: Stock::new(body.stock).map_err(ApiError::invalid)?,
            window: EventWindow::new(body.opens_at, body.closes_at).map_err(ApiError::invalid)?,
        };
        // The row and the gate's copy appear together: the transaction commits only after Redis
        // accepted the coupon, and a failed commit takes the Redis copy back.
        let mut tx = state.db.begin().await?;
        let coupon = store::insert_coupon(&mut tx, new).await?;
        state.gate.register(&coupon).await?;
        if let Err(e) = tx.commit().await {
            if let Err(undo) = state.gate.unregister(coupon.id).await {
                tracing::error!(error = ?undo, coupon_id = %coupon.id, "stray coupon left in Redis");
            }
            return Err(e.into());
        }
        tracing::info!(coupon_id = %coupon.id, stock = coupon.stock.get(), "coupon event created");
        let snapshot = Snapshot::fresh(coupon);
        Ok(CreatedResponse::Created(Json(CouponView::from(&snapshot))))
    }

    /// Read a coupon event: stock, admitted, issued, remaining and state. Served from Redis.
    #[oai(path = "/coupons/:couponId", method = "get")]
    async fn get(
        &self,
        state: Data<&AppState>,
        /// The coupon event's id.
        #[oai(name = "couponId")]
        coupon: Path<i64>,
    ) -> Result<Json<CouponView>, ApiError> {
        let id = coupon_id(coupon.0)?;
        let snapshot =
            state.gate.snapshot(id, None).await?.ok_or_else(|| {
                ApiError::new(ErrorCode::CouponNotFound, format!("No coupon {id}."))
            })?;
        Ok(Json(CouponView::from(&snapshot)))
    }
}
