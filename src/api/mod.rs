//! The HTTP API: poem-openapi services, Swagger UI at `/docs`, the spec at `/openapi.json`.

mod apply;
mod archive;
mod audit;
mod catch;
mod client_address;
mod coupons;
mod dashboard;
mod event;
mod fairness;
mod fresh;
mod guard;
mod health;
mod http_cache;
mod idle;
mod issues;
mod log_reads;
mod position;
mod problem;
mod rate_limit;
mod rehearsal;
mod security;
mod state;
mod user_reads;
mod views;

use poem::{get, Endpoint, EndpointExt, Route};
use poem_openapi::{OpenApiService, Tags};

pub use audit::report_json as audit_report_json;
pub use client_address::ClientAddress;
pub use fresh::{Fresh, FreshByKey, FRESH_FOR};
pub use guard::RequestGuard;
pub use idle::IdleCutoff;
pub use log_reads::{LogReads, QUERY_TIMEOUT as LOG_READ_TIMEOUT};
pub use problem::{ApiError, ErrorCode, Problem};
pub use rate_limit::{ApplyLimiter, SWEEP_INTERVAL};
pub use state::AppState;
pub use user_reads::UserReads;

use crate::domain::CouponId;

#[derive(Tags)]
enum ApiTags {
    /// Coupon events.
    Coupons,
    /// Applying for a coupon and following it.
    Applications,
    /// Issued coupons, read from PostgreSQL.
    Issues,
    /// Liveness and readiness.
    Health,
    /// The verifiable record of arrivals: signed checkpoints, proofs and leaves.
    Fairness,
}

type Apis = (
    coupons::CouponsApi,
    dashboard::DashboardApi,
    apply::ApplyApi,
    position::PositionApi,
    issues::IssuesApi,
    audit::AuditApi,
    health::HealthApi,
    fairness::FairnessApi,
);

/// The OpenAPI service; needs no running dependency, so the spec can be generated anywhere.
pub fn service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            coupons::CouponsApi,
            dashboard::DashboardApi,
            apply::ApplyApi,
            position::PositionApi,
            issues::IssuesApi,
            audit::AuditApi,
            health::HealthApi,
            fairness::FairnessApi,
        ),
        "fcfs-coupon",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "First-come, first-served coupon issuing. Apply with a user token; the first `stock` \
         distinct users get a coupon, in order of arrival. Errors are application/problem+json \
         with a stable `code`. Besides the statuses each operation lists, any request can be \
         refused before it reaches an operation: 408 `REQUEST_TIMEOUT`, 413 \
         `PAYLOAD_TOO_LARGE`, 431 `HEADERS_TOO_LARGE` (the configured transport limits).",
    )
}

/// The OpenAPI document as committed in `openapi/openapi.json`.
pub fn spec_json() -> String {
    service().spec()
}

/// Every route, with state attached and every error rendered as problem+json.
pub fn app(state: AppState, guard: RequestGuard) -> impl Endpoint {
    let api = service();
    Route::new()
        .nest("/docs", api.swagger_ui())
        .at("/openapi.json", api.spec_endpoint())
        .at("/dashboard", get(dashboard::page))
        .nest("/", api.around(http_cache::public))
        .with(guard)
        .data(state)
        .catch_all_error(catch::to_problem)
}

fn coupon_id<const C: u32>(raw: i64) -> Result<CouponId, ApiError<C>> {
    CouponId::new(raw).map_err(ApiError::invalid)
}
