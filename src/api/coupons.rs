//! `POST /coupons` (admin), `GET /coupons` and `GET /coupons/{couponId}`. Both operations on
//! `/coupons` live in this one impl: poem-openapi writes one path item per impl, so splitting
//! them emitted the key `/coupons` twice and clients kept only the last.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::event;
use super::problem::{declared, ApiError, ErrorCode};
use super::security::BearerAuth;
use super::views::{CouponView, SummaryView};
use super::{coupon_id, ApiTags, AppState};
use crate::domain::{Coupon, CouponName, EventWindow, Stock};
use crate::gate::Snapshot;
use crate::store::{self, NewCoupon};

/// How many events `GET /coupons` lists, newest first.
const LIST_LIMIT: i64 = 50;

type CreateError = ApiError<{ declared::CREATE }>;
type ListError = ApiError<{ declared::READ }>;
type ReadError = ApiError<{ declared::READ_COUPON }>;
type DeleteError = ApiError<{ declared::DELETE }>;

/// A new coupon event.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", deny_unknown_fields, example)]
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
    /// A rehearsal (`fcfs-bench rehearse`): not listed, only rehearsal users' tokens may apply,
    /// and `DELETE /coupons/{couponId}` removes it with everything it wrote. Default false.
    #[oai(skip_serializing_if_is_none)]
    pub rehearsal: Option<bool>,
}

impl poem_openapi::types::Example for CreateCoupon {
    fn example() -> Self {
        Self {
            name: "Spring sale".into(),
            stock: 100,
            opens_at: None,
            closes_at: None,
            rehearsal: None,
        }
    }
}

impl CreateCoupon {
    fn parse(&self) -> Result<NewCoupon, CreateError> {
        Ok(NewCoupon {
            name: CouponName::new(&self.name).map_err(ApiError::invalid)?,
            stock: Stock::new(self.stock).map_err(ApiError::invalid)?,
            window: EventWindow::new(self.opens_at, self.closes_at).map_err(ApiError::invalid)?,
            batch_window_us: 0,
            rehearsal: self.rehearsal.unwrap_or(false),
        })
    }
}

#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct CouponList {
    /// The newest events first, at most 50.
    pub items: Vec<SummaryView>,
}

#[derive(ApiResponse)]
pub enum CreatedResponse {
    /// The event exists and accepts applications within its window.
    #[oai(status = 201)]
    Created(Json<CouponView>),
}

#[derive(ApiResponse)]
pub enum ListResponse {
    /// The newest events, read from PostgreSQL.
    #[oai(status = 200)]
    Events(Json<CouponList>),
}

#[derive(ApiResponse)]
pub enum DeletedResponse {
    /// The rehearsal event and everything it wrote are gone.
    #[oai(status = 204)]
    Deleted,
}

#[derive(ApiResponse)]
pub enum CouponResponse {
    /// The event with its live numbers, read from Redis.
    #[oai(status = 200)]
    Event(Json<CouponView>),
}

pub struct CouponsApi;

#[OpenApi(tag = "ApiTags::Coupons")]
impl CouponsApi {
    /// Create a coupon event (admin token).
    #[oai(path = "/coupons", method = "post", operation_id = "createCoupon")]
    #[tracing::instrument(name = "create_coupon", skip_all)]
    async fn create(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        body: Json<CreateCoupon>,
    ) -> Result<CreatedResponse, CreateError> {
        auth.require_admin()?;
        let new = NewCoupon {
            // Recorded with the event, and signed into its fairness log.
            batch_window_us: state.gate.batch_window_us(),
            ..body.parse()?
        };
        let coupon = create(&state, new.clone()).await?;
        state.rehearsals.note(coupon.id, new.rehearsal);
        forget(&state, coupon.id).await;
        tracing::info!(coupon_id = %coupon.id, stock = coupon.stock.get(), "coupon event created");
        let snapshot = Snapshot::fresh(coupon);
        Ok(CreatedResponse::Created(Json(CouponView::from(&snapshot))))
    }

    /// The newest coupon events (read from PostgreSQL, at most a second old).
    #[oai(path = "/coupons", method = "get", operation_id = "listCoupons")]
    async fn list(&self, state: Data<&AppState>) -> Result<ListResponse, ListError> {
        let items = state
            .list_cache
            .get(|| store::list_coupons(&state.db, LIST_LIMIT))
            .await?;
        let items = items.iter().cloned().map(SummaryView::from).collect();
        Ok(ListResponse::Events(Json(CouponList { items })))
    }

    /// Read a coupon event: stock, admitted, issued, remaining and state. Served from Redis,
    /// at most a second old (`asOf`): a crowd refreshing it costs Redis one read a second.
    #[oai(
        path = "/coupons/:couponId",
        method = "get",
        operation_id = "getCoupon"
    )]
    async fn get(
        &self,
        state: Data<&AppState>,
        /// The coupon event's id.
        #[oai(name = "couponId")]
        coupon: Path<i64>,
    ) -> Result<CouponResponse, ReadError> {
        let id = coupon_id(coupon.0)?;
        let snapshot = event::snapshot(&state, id).await?;
        let snapshot = Option::as_ref(&snapshot).ok_or_else(|| ReadError::no_coupon(id))?;
        let mut view = CouponView::from(snapshot);
        view.log = super::fairness::log_view(&state, id).await;
        Ok(CouponResponse::Event(Json(view)))
    }

    /// Delete a rehearsal event with its rows and log (admin token). Real events cannot be
    /// deleted (403); a rehearsal whose winners are still on their way answers 409 EVENT_BUSY.
    #[oai(
        path = "/coupons/:couponId",
        method = "delete",
        operation_id = "deleteRehearsal"
    )]
    async fn delete(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        /// The rehearsal event's id.
        #[oai(name = "couponId")]
        coupon: Path<i64>,
    ) -> Result<DeletedResponse, DeleteError> {
        auth.require_admin()?;
        let id = coupon_id(coupon.0)?;
        // A message still on the topic (a duplicate of a winner long issued) would reach the
        // consumer after the event is gone and be set aside as a failed event.
        let (topic, group) = (&state.kafka.topic, &state.kafka.group_id);
        let behind = crate::kafka::group_offsets(&state.kafka, topic, group)
            .await
            .map_err(|e| DeleteError::unavailable(&e))?
            .behind();
        if behind > 0 {
            return Err(DeleteError::new(
                ErrorCode::EventBusy,
                "Messages are still on their way to the database; try again once they are issued.",
            ));
        }
        // The row is locked first and deleted with its Redis copy inside the transaction: if
        // Redis refuses (busy, unreachable), nothing is deleted.
        let mut tx = state.db.begin().await?;
        match store::delete_rehearsal(&mut tx, id).await? {
            None => return Err(DeleteError::no_coupon(id)),
            Some(false) => {
                return Err(DeleteError::new(
                    ErrorCode::Forbidden,
                    "Only rehearsal events can be deleted.",
                ))
            }
            Some(true) => {}
        }
        if !state.gate.drop_event(id).await? {
            return Err(DeleteError::new(
                ErrorCode::EventBusy,
                "Winners of this rehearsal are still on their way; try again once they are issued.",
            ));
        }
        tx.commit().await?;
        forget(&state, id).await;
        tracing::info!(coupon_id = %id, "rehearsal event deleted");
        Ok(DeletedResponse::Deleted)
    }
}

/// This instance's copies of what an event looked like (unknown, or there): created or deleted
/// here, it is seen at once here; elsewhere within a second.
async fn forget(state: &AppState, id: crate::domain::CouponId) {
    state.list_cache.invalidate().await;
    state.event_cache.forget(id);
    state.stats_cache.forget(id);
    state.log_cache.forget(id);
    state.user_reads.forget_coupon(id);
}

/// The row is the commit point. Its Redis copy is written first, held, inside the row's
/// transaction: if Redis refuses it the row is rolled back (503), and a copy whose row never
/// committed admits nobody (held) and expires. Once the row is committed the hold is lifted; if
/// that fails, the event stays held (503 to applications) until the watcher restores it from
/// the row, within seconds.
async fn create(state: &AppState, new: NewCoupon) -> Result<Coupon, CreateError> {
    let mut tx = state.db.begin().await?;
    let coupon = store::insert_coupon(&mut tx, new).await?;
    let hold = state.gate.register(&coupon).await?;
    tx.commit().await?;
    if let Err(e) = state.gate.open(coupon.id, &hold).await {
        state.gate.remember([coupon.id]);
        tracing::warn!(error = ?e, coupon_id = %coupon.id, "created, still held: the Redis watcher opens it once Redis answers");
    }
    Ok(coupon)
}
