//! The ops port (`APP_OPS__ADDR`): `/metrics`, `/health/live` and `/health/ready` in every
//! process, whatever its roles, so an issuer-only or consumer-only process can be scraped and
//! probed too. Kept off the public port: metrics tell competitors and attackers too much.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use poem::listener::TcpAcceptor;
use poem::web::{Data, Json};
use poem::{get, handler, EndpointExt, IntoResponse, Response, Route, Server};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::health::Dependencies;
use crate::api::{IdleCutoff, RequestGuard};
use crate::configuration::Settings;
use crate::metrics::Metrics;

pub struct OpsPort {
    listener: TcpListener,
    port: u16,
    state: OpsState,
    /// The public port's limits (body, headers, request time, idle connections): an ops port
    /// reachable by more than the scraper must not be an easier target.
    guard: RequestGuard,
    idle_timeout: Duration,
}

#[derive(Clone)]
struct OpsState {
    metrics: Arc<Metrics>,
    dependencies: Dependencies,
}

impl OpsPort {
    pub async fn bind(
        settings: &Settings,
        metrics: Arc<Metrics>,
        dependencies: Dependencies,
    ) -> anyhow::Result<Self> {
        let addr = &settings.ops.addr;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the ops port APP_OPS__ADDR={addr}"))?;
        Ok(Self {
            port: listener.local_addr()?.port(),
            listener,
            state: OpsState {
                metrics,
                dependencies,
            },
            guard: RequestGuard::new(&settings.http),
            idle_timeout: settings.http.idle_timeout(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let routes = Route::new()
            .at("/metrics", get(prometheus))
            .at("/health/live", get(live))
            .at("/health/ready", get(ready))
            .with(self.guard)
            .data(self.state);
        let acceptor = TcpAcceptor::from_tokio(self.listener)?;
        Server::new_with_acceptor(IdleCutoff::new(acceptor, self.idle_timeout))
            .run_with_graceful_shutdown(routes, shutdown.cancelled_owned(), None)
            .await
            .context("ops port failed")
    }
}

/// Prometheus text format. Readiness is checked at each scrape, so `fcfs_ready` is as fresh as
/// the scrape and an alert on it needs no probe of its own.
#[handler]
async fn prometheus(state: Data<&OpsState>) -> Response {
    let up = state.dependencies.check().await.ready();
    state.metrics.ready.set(i64::from(up));
    Response::builder()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.encode())
}

#[handler]
fn live() -> Json<Value> {
    Json(json!({"status": "up"}))
}

/// 200 when every dependency this process uses answers, else 503; the body names each one
/// checked, `up` or `down`.
#[handler]
async fn ready(state: Data<&OpsState>) -> Response {
    let checked = state.dependencies.check().await;
    let word = |up: bool| if up { "up" } else { "down" };
    let mut body = Map::new();
    body.insert("status".into(), word(checked.ready()).into());
    for (name, status) in [
        ("redis", checked.redis),
        ("postgres", checked.postgres),
        ("kafka", checked.kafka),
    ] {
        if let Some(up) = status {
            body.insert(name.into(), word(up).into());
        }
    }
    let status = if checked.ready() {
        poem::http::StatusCode::OK
    } else {
        poem::http::StatusCode::SERVICE_UNAVAILABLE
    };
    Json(Value::Object(body))
        .with_status(status)
        .into_response()
}
