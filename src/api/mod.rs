//! The HTTP API: poem-openapi services, Swagger UI at `/docs`, the spec at `/openapi.json`.

mod apply;
mod catch;
mod coupons;
mod health;
mod issues;
mod position;
mod problem;
mod security;
mod state;

use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::{OpenApiService, Tags};

pub use problem::{ApiError, ErrorCode, Problem};
pub use state::AppState;

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
}

type Apis = (
    coupons::CouponsApi,
    apply::ApplyApi,
    position::PositionApi,
    issues::IssuesApi,
    health::HealthApi,
);

/// The OpenAPI service; needs no running dependency, so the spec can be generated anywhere.
pub fn service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            coupons::CouponsApi,
            apply::ApplyApi,
            position::PositionApi,
            issues::IssuesApi,
            health::HealthApi,
        ),
        "fcfs-coupon",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "First-come, first-served coupon issuing. Apply with a user token; the first `stock` \
         distinct users get a coupon, in order of arrival. Errors are application/problem+json \
         with a stable `code`.",
    )
}

/// The OpenAPI document as committed in `openapi/openapi.json`.
pub fn spec_json() -> String {
    service().spec()
}

/// Every route, with state attached and every error rendered as problem+json.
pub fn app(state: AppState) -> impl Endpoint {
    let api = service();
    Route::new()
        .nest("/docs", api.swagger_ui())
        .at("/openapi.json", api.spec_endpoint())
        .nest("/", api)
        .data(state)
        .catch_all_error(catch::to_problem)
}

fn coupon_id(raw: i64) -> Result<CouponId, ApiError> {
    CouponId::new(raw).map_err(ApiError::invalid)
}
