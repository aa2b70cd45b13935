//! `GET /coupons/{couponId}/audit`: Redis against PostgreSQL for one coupon (admin).

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::OpenApi;

use super::problem::{ApiError, ErrorCode};
use super::security::BearerAuth;
use super::{coupon_id, ApiTags, AppState};
use crate::audit::{self, AuditReport};
use crate::gate::GateError;

pub struct AuditApi;

#[OpenApi(tag = "ApiTags::Coupons")]
impl AuditApi {
    /// Compare Redis' winners and in-flight claims with PostgreSQL's rows (admin token).
    /// `consistent` is false when any discrepancy exists; work still in the pipeline is counted,
    /// not reported.
    #[oai(path = "/coupons/:couponId/audit", method = "get")]
    async fn audit(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        /// The coupon event's id.
        #[oai(name = "couponId")]
        coupon: Path<i64>,
    ) -> Result<Json<AuditReport>, ApiError> {
        auth.require_admin()?;
        let id = coupon_id(coupon.0)?;
        match audit::audit(&state.gate, &state.db, id).await {
            Ok(Some(report)) => Ok(Json(report)),
            Ok(None) => Err(ApiError::new(
                ErrorCode::CouponNotFound,
                format!("No coupon {id}."),
            )),
            Err(e) => Err(match e.downcast::<GateError>() {
                Ok(gate) => gate.into(),
                Err(e) => match e.downcast::<sqlx::Error>() {
                    Ok(db) => db.into(),
                    Err(other) => ApiError::internal(other),
                },
            }),
        }
    }
}
