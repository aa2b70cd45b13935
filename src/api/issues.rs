//! The database-backed pages: `GET /me/coupons` and `GET /coupons/{couponId}/issues`.

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::problem::{declared, ApiError};
use super::security::BearerAuth;
use super::views::{IssueView, MyCouponView};
use super::{coupon_id, ApiTags, AppState};
use crate::store;

/// How many of a user's coupons `GET /me/coupons` lists, newest first.
const MY_COUPONS_LIMIT: i64 = 100;
const DEFAULT_PAGE: i64 = 100;

type MineError = ApiError<{ declared::MINE }>;
type IssuesError = ApiError<{ declared::ADMIN_COUPON }>;

#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct MyCoupons {
    pub items: Vec<MyCouponView>,
}

#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct IssuePage {
    /// Persisted issues in arrival order.
    pub items: Vec<IssueView>,
    /// Pass as `afterPosition` for the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub next_after_position: Option<i32>,
}

#[derive(ApiResponse)]
pub enum MineResponse {
    /// The caller's issued coupons, newest first (at most 100).
    #[oai(status = 200)]
    Coupons(Json<MyCoupons>),
}

#[derive(ApiResponse)]
pub enum IssuesResponse {
    /// One page of persisted issues in position order.
    #[oai(status = 200)]
    Page(Json<IssuePage>),
}

pub struct IssuesApi;

#[OpenApi(tag = "ApiTags::Issues")]
impl IssuesApi {
    /// The caller's issued coupons, newest first (user token). Read from PostgreSQL, so
    /// limited per user: 429 `RATE_LIMITED` with `Retry-After` past 10 at once or 2 a second.
    #[oai(path = "/me/coupons", method = "get", operation_id = "listMyCoupons")]
    async fn mine(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
    ) -> Result<MineResponse, MineError> {
        (state.user_reads.take_db_read(auth.0.user)).map_err(|wait| {
            MineError::rate_limited(wait, "Too many reads of your coupons; try again later.")
        })?;
        let items =
            store::user_coupons(&state.db, auth.0.user, auth.0.rehearsal, MY_COUPONS_LIMIT).await?;
        let items = items.into_iter().map(MyCouponView::from).collect();
        Ok(MineResponse::Coupons(Json(MyCoupons { items })))
    }

    /// A coupon's persisted issues in arrival order, a page at a time (admin token).
    #[oai(
        path = "/coupons/:couponId/issues",
        method = "get",
        operation_id = "listCouponIssues"
    )]
    async fn list(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        /// The coupon event's id.
        #[oai(name = "couponId")]
        coupon: Path<i64>,
        /// Only issues after this position (default 0: from the first).
        #[oai(name = "afterPosition", validator(minimum(value = "0")))]
        after_position: Query<Option<i32>>,
        /// Page size, 1 to 1000 (default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<i64>>,
    ) -> Result<IssuesResponse, IssuesError> {
        auth.require_admin()?;
        let id = coupon_id(coupon.0)?;
        let limit = limit.0.unwrap_or(DEFAULT_PAGE);
        let items = store::coupon_issues(&state.db, id, after_position.0.unwrap_or(0), limit)
            .await?
            .ok_or_else(|| IssuesError::no_coupon(id))?;
        let full_page = items.len() as i64 == limit;
        let next_after_position = full_page
            .then(|| items.last().map(|i| i.position))
            .flatten();
        Ok(IssuesResponse::Page(Json(IssuePage {
            items: items.into_iter().map(IssueView::from).collect(),
            next_after_position,
        })))
    }
}
