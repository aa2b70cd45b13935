//! The ops port (`APP_OPS__ADDR`): `/metrics`, `/health/live` and `/health/ready` in every
//! process, whatever its roles, so an issuer-only or consumer-only process can be scraped and
//! probed too. Kept off the public port: metrics tell competitors and attackers too much.
//! Both answer from what the process already knows: its dependencies are checked once a
//! second in the background, so a scraper or a storm of probes costs the backends nothing.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use poem::listener::TcpAcceptor;
use poem::web::{Data, Json};
use poem::{get, handler, EndpointExt, IntoResponse, Response, Route, Server};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::health::{Checked, Dependencies};
use crate::api::{IdleCutoff, RequestGuard};
use crate::configuration::Settings;
use crate::metrics::Metrics;

pub struct OpsPort {
    listener: TcpListener,
    port: u16,
    metrics: Arc<Metrics>,
    dependencies: Dependencies,
    /// The public port's limits (body, headers, request time, idle connections): an ops port
    /// reachable by more than the scraper must not be an easier target.
    guard: RequestGuard,
    idle_timeout: Duration,
}

#[derive(Clone)]
struct OpsState {
    metrics: Arc<Metrics>,
    /// The last check's result; `None` until the first one ends.
    checked: watch::Receiver<Option<Checked>>,
}

/// How often the background check runs: readiness is at most this old (plus a check's time).
const CHECK_EVERY: Duration = Duration::from_secs(1);

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
            metrics,
            dependencies,
            guard: RequestGuard::new(&settings.http),
            idle_timeout: settings.http.idle_timeout(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let (publish, checked) = watch::channel(None);
        let checker = tokio::spawn(keep_checking(self.dependencies, publish, shutdown.clone()));
        let state = OpsState {
            metrics: self.metrics,
            checked,
        };
        let routes = Route::new()
            .at("/metrics", get(prometheus))
            .at("/health/live", get(live))
            .at("/health/ready", get(ready))
            .with(self.guard)
            .data(state);
        let acceptor = TcpAcceptor::from_tokio(self.listener)?;
        let served = Server::new_with_acceptor(IdleCutoff::new(acceptor, self.idle_timeout))
            .run_with_graceful_shutdown(routes, shutdown.cancelled_owned(), None)
            .await
            .context("ops port failed");
        checker.abort();
        served
    }
}

/// Checks the dependencies once a [`CHECK_EVERY`] (each check bounded by its own timeouts)
/// and publishes the result, until shutdown.
async fn keep_checking(
    dependencies: Dependencies,
    publish: watch::Sender<Option<Checked>>,
    shutdown: CancellationToken,
) {
    loop {
        let checked = dependencies.check().await;
        publish.send_replace(Some(checked));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
    }
}

impl OpsState {
    /// The last check; not ready until one has ended.
    fn ready(&self) -> Option<Checked> {
        *self.checked.borrow()
    }
}

/// Prometheus text format. `fcfs_ready` is the last background check (at most about a second
/// old), so an alert on it needs no probe of its own and a scrape costs the backends nothing.
#[handler]
fn prometheus(state: Data<&OpsState>) -> Response {
    let up = state.ready().is_some_and(|c| c.ready());
    state.metrics.ready.set(i64::from(up));
    Response::builder()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.encode())
}

#[handler]
fn live() -> Json<Value> {
    Json(json!({"status": "up"}))
}

/// 200 when every dependency this process uses answered the last check, else 503; the body
/// names each one checked, `up` or `down` (only `status` before the first check ends).
#[handler]
fn ready(state: Data<&OpsState>) -> Response {
    let word = |up: bool| if up { "up" } else { "down" };
    let mut body = Map::new();
    let Some(checked) = state.ready() else {
        body.insert("status".into(), word(false).into());
        return Json(Value::Object(body))
            .with_status(poem::http::StatusCode::SERVICE_UNAVAILABLE)
            .into_response();
    };
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
