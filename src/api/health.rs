//! `GET /health/live` and `GET /health/ready`.

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};

use super::{ApiTags, AppState};
use crate::ops::health::Dependencies;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum CheckStatus {
    Up,
    Down,
}

/// Each dependency the service needs to do its job.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct Readiness {
    pub status: CheckStatus,
    pub redis: CheckStatus,
    pub postgres: CheckStatus,
    pub kafka: CheckStatus,
    /// The identity provider's keys (only with `APP_AUTH__JWKS_URL`): down while none could be
    /// fetched, and tokens it signed answer 503.
    #[oai(skip_serializing_if_is_none)]
    pub identity_provider: Option<CheckStatus>,
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// Redis, PostgreSQL and the Kafka broker all answer (and the identity provider's keys are
    /// at hand, when there is one).
    #[oai(status = 200)]
    Ready(Json<Readiness>),
    /// At least one dependency does not answer; the body says which.
    #[oai(status = 503)]
    NotReady(Json<Readiness>),
}

#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct Liveness {
    pub status: CheckStatus,
}

#[derive(ApiResponse)]
pub enum LiveResponse {
    /// The process is up and serving HTTP.
    #[oai(status = 200)]
    Live(Json<Liveness>),
}

pub struct HealthApi;

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// The process is up and serving HTTP.
    #[oai(path = "/health/live", method = "get", operation_id = "live")]
    async fn live(&self) -> LiveResponse {
        LiveResponse::Live(Json(Liveness {
            status: CheckStatus::Up,
        }))
    }

    /// Whether Redis, PostgreSQL and the Kafka broker answer, each within two seconds; checked
    /// at most once a second for every caller together.
    #[oai(path = "/health/ready", method = "get", operation_id = "ready")]
    async fn ready(&self, state: Data<&AppState>) -> ReadyResponse {
        let dependencies = Dependencies {
            redis: Some(state.gate.clone()),
            postgres: Some(state.db.clone()),
            kafka: Some(state.broker.clone()),
        };
        let checked = state
            .ready_cache
            .get(|| async move { Ok::<_, std::convert::Infallible>(dependencies.check().await) })
            .await;
        let Ok(checked) = checked;
        let up = |status: Option<bool>| {
            if status == Some(true) {
                CheckStatus::Up
            } else {
                CheckStatus::Down
            }
        };
        let keys = state.tokens.keys_ready().await;
        let mut readiness = Readiness {
            status: CheckStatus::Up,
            redis: up(checked.redis),
            postgres: up(checked.postgres),
            kafka: up(checked.kafka),
            identity_provider: keys.map(|ready| up(Some(ready))),
        };
        let parts = [readiness.redis, readiness.postgres, readiness.kafka];
        if parts.contains(&CheckStatus::Down) || keys == Some(false) {
            readiness.status = CheckStatus::Down;
            ReadyResponse::NotReady(Json(readiness))
        } else {
            ReadyResponse::Ready(Json(readiness))
        }
    }
}
