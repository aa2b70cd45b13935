//! `GET /coupons/{couponId}/audit`: Redis against PostgreSQL for one coupon (admin). The CLI's
//! `fcfs-coupon audit` prints the same JSON.

use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};

use super::problem::{declared, ApiError};
use super::security::BearerAuth;
use super::{coupon_id, ApiTags, AppState};
use crate::ops::audit::{self, AuditReport, DiscrepancyKind, RedisCounts};

type AuditError = ApiError<{ declared::ADMIN_COUPON }>;

#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", rename = "AuditReport")]
pub struct AuditView {
    pub coupon_id: i64,
    pub stock: u32,
    /// True when there is no discrepancy.
    pub consistent: bool,
    pub redis: RedisCountsView,
    pub database: DatabaseCountsView,
    pub discrepancy_count: u64,
    /// The first 100 discrepancies.
    pub discrepancies: Vec<DiscrepancyView>,
}

#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", rename = "RedisCounts")]
pub struct RedisCountsView {
    /// False when Redis holds no state for the coupon (run `fcfs-coupon reconcile`).
    pub present: bool,
    /// Held while being restored from PostgreSQL.
    pub recovering: bool,
    pub admitted: u64,
    pub pending: u64,
    pub inflight: u64,
    /// Claims whose lease ran out; the next issuer tick takes them back.
    pub expired_claims: u64,
    /// Admitted or published winners without a row yet: still on their way.
    pub awaiting_persistence: u64,
    pub issued: u64,
    pub failed: u64,
    /// Positions kept for winners lost with Redis' memory (see reconciliation).
    pub lost_positions: u64,
}

#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", rename = "DatabaseCounts")]
pub struct DatabaseCountsView {
    pub rows: u64,
    pub issued_count: u64,
}

#[derive(Debug, Object)]
#[oai(rename_all = "camelCase", rename = "Discrepancy")]
pub struct DiscrepancyView {
    pub kind: KindView,
    #[oai(skip_serializing_if_is_none)]
    pub user_id: Option<i64>,
    #[oai(skip_serializing_if_is_none)]
    pub position: Option<u32>,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "SCREAMING_SNAKE_CASE", rename = "DiscrepancyKind")]
pub enum KindView {
    RedisStateMissing,
    AdmittedOverStock,
    PersistedOverStock,
    IssuedCountMismatch,
    IssuedCounterMismatch,
    StatusCounterMismatch,
    RowWithoutWinner,
    PositionMismatch,
    IssuedWithoutRow,
    WinnerStuck,
    LostPosition,
    PublishedWithoutRow,
    WinnerFailed,
    LogMismatch,
}

impl From<DiscrepancyKind> for KindView {
    fn from(k: DiscrepancyKind) -> Self {
        use DiscrepancyKind as K;
        match k {
            K::RedisStateMissing => Self::RedisStateMissing,
            K::AdmittedOverStock => Self::AdmittedOverStock,
            K::PersistedOverStock => Self::PersistedOverStock,
            K::IssuedCountMismatch => Self::IssuedCountMismatch,
            K::IssuedCounterMismatch => Self::IssuedCounterMismatch,
            K::StatusCounterMismatch => Self::StatusCounterMismatch,
            K::RowWithoutWinner => Self::RowWithoutWinner,
            K::PositionMismatch => Self::PositionMismatch,
            K::IssuedWithoutRow => Self::IssuedWithoutRow,
            K::WinnerStuck => Self::WinnerStuck,
            K::LostPosition => Self::LostPosition,
            K::PublishedWithoutRow => Self::PublishedWithoutRow,
            K::WinnerFailed => Self::WinnerFailed,
            K::LogMismatch => Self::LogMismatch,
        }
    }
}

impl From<RedisCounts> for RedisCountsView {
    fn from(c: RedisCounts) -> Self {
        Self {
            present: c.present,
            recovering: c.recovering,
            admitted: c.admitted,
            pending: c.pending,
            inflight: c.inflight,
            expired_claims: c.expired_claims,
            awaiting_persistence: c.awaiting_persistence,
            issued: c.issued,
            failed: c.failed,
            lost_positions: c.lost_positions,
        }
    }
}

impl From<AuditReport> for AuditView {
    fn from(r: AuditReport) -> Self {
        Self {
            coupon_id: r.coupon_id.get(),
            stock: r.stock,
            consistent: r.consistent,
            redis: r.redis.into(),
            database: DatabaseCountsView {
                rows: r.database.rows,
                issued_count: r.database.issued_count,
            },
            discrepancy_count: r.discrepancy_count,
            discrepancies: r
                .discrepancies
                .into_iter()
                .map(|d| DiscrepancyView {
                    kind: d.kind.into(),
                    user_id: d.user_id,
                    position: d.position,
                    detail: d.detail,
                })
                .collect(),
        }
    }
}

/// The report as the API serves it, for the command line.
pub fn report_json(report: AuditReport) -> serde_json::Value {
    poem_openapi::types::ToJSON::to_json(&AuditView::from(report)).unwrap_or_default()
}

#[derive(ApiResponse)]
pub enum AuditResponse {
    /// The comparison; `consistent` is false when any discrepancy exists.
    #[oai(status = 200)]
    Report(Json<AuditView>),
}

pub struct AuditApi;

#[OpenApi(tag = "ApiTags::Coupons")]
impl AuditApi {
    /// Compare Redis' winners and in-flight claims with PostgreSQL's rows (admin token).
    /// `consistent` is false when any discrepancy exists; work still in the pipeline is counted,
    /// not reported.
    #[oai(
        path = "/coupons/:couponId/audit",
        method = "get",
        operation_id = "auditCoupon"
    )]
    async fn audit(
        &self,
        state: Data<&AppState>,
        auth: BearerAuth,
        /// The coupon event's id.
        #[oai(name = "couponId")]
        coupon: Path<i64>,
    ) -> Result<AuditResponse, AuditError> {
        auth.require_admin()?;
        let id = coupon_id(coupon.0)?;
        let report = audit::audit(&state.gate, &state.db, id)
            .await?
            .ok_or_else(|| AuditError::no_coupon(id))?;
        Ok(AuditResponse::Report(Json(report.into())))
    }
}
