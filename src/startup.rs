//! Assembles the service from its settings: connect, migrate, bind, then run the API, the batch
//! issuer and the consumer side by side until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use poem::listener::TcpAcceptor;
use poem::Server;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::auth::TokenKeys;
use crate::configuration::Settings;
use crate::consumer::IssueConsumer;
use crate::issuer::Issuer;
use crate::kafka::{self, BrokerProbe, Publisher};
use crate::metrics::Metrics;
use crate::store;

/// How long in-flight requests may take to finish once shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// What pollers are told to wait while a winner moves through the pipeline.
const STATUS_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The parts one process can run; `serve` runs all three unless told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The HTTP API (and the admission gate behind it).
    Api,
    /// The batch issuer: Redis pending → Kafka, every second.
    Issuer,
    /// The consumer: Kafka → PostgreSQL in batches.
    Consumer,
}

pub struct Application {
    http: Option<(TcpListener, AppState)>,
    port: Option<u16>,
    issuer: Option<Issuer>,
    consumer: Option<IssueConsumer>,
}

impl Application {
    /// Connects to PostgreSQL (creating and migrating the database), Redis and Kafka (creating
    /// the topics), and binds the listener, so `port()` is known before serving.
    pub async fn build(settings: &Settings, roles: &[Role]) -> anyhow::Result<Self> {
        if settings.auth.uses_development_secret() {
            tracing::warn!(
                "APP_AUTH__JWT_SECRET is not set: using the built-in DEVELOPMENT secret. \
                 Anyone can mint tokens for this instance. Never run it like this in production."
            );
        }
        let db = settings.database.pool().await?;
        store::migrate(&db).await?;
        let metrics = Metrics::new();
        let gate = settings.redis.gate()?.with_metrics(metrics.clone());
        let pipeline = roles.contains(&Role::Issuer) || roles.contains(&Role::Consumer);
        let publisher = if pipeline {
            kafka::ensure_topics(&settings.kafka).await?;
            Some(Publisher::new(&settings.kafka)?)
        } else {
            None
        };
        let issuer = match (&publisher, roles.contains(&Role::Issuer)) {
            (Some(p), true) => Some(Issuer::new(
                gate.clone(),
                p.clone(),
                settings.issuer.clone(),
                metrics.clone(),
            )),
            _ => None,
        };
        let consumer = match (&publisher, roles.contains(&Role::Consumer)) {
            (Some(p), true) => Some(IssueConsumer::new(
                &settings.kafka,
                settings.consumer.clone(),
                db.clone(),
                gate.clone(),
                p.clone(),
                metrics.clone(),
            )?),
            _ => None,
        };
        let (http, port) = if roles.contains(&Role::Api) {
            let state = AppState {
                gate,
                db,
                tokens: Arc::new(TokenKeys::new(&settings.auth.secret())),
                broker: BrokerProbe::new(&settings.kafka)?,
                apply_permits: Arc::new(tokio::sync::Semaphore::new(
                    settings.http.apply_concurrency.max(1),
                )),
                metrics,
                issuer_period: STATUS_POLL_INTERVAL,
            };
            let listener = TcpListener::bind(&settings.http.addr)
                .await
                .with_context(|| format!("binding {}", settings.http.addr))?;
            let port = listener.local_addr()?.port();
            (Some((listener, state)), Some(port))
        } else {
            (None, None)
        };
        Ok(Self {
            http,
            port,
            issuer,
            consumer,
        })
    }

    /// The bound HTTP port, when this process runs the API.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// A handle on this process's batch issuer, for running ticks by hand.
    pub fn issuer(&self) -> Option<Issuer> {
        self.issuer.clone()
    }

    /// Runs every part until `shutdown` is cancelled (or one part fails, which stops the rest):
    /// the API stops accepting and drains, the issuer finishes its tick and flushes, the
    /// consumer finishes or abandons (uncommitted) its batch.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let http = self.http.map(|(listener, state)| {
            let shutdown = shutdown.clone();
            Box::pin(async move {
                Server::new_with_acceptor(TcpAcceptor::from_tokio(listener)?)
                    .run_with_graceful_shutdown(
                        api::app(state),
                        shutdown.cancelled_owned(),
                        Some(DRAIN_TIMEOUT),
                    )
                    .await
                    .context("HTTP server failed")
            })
        });
        // Boxed: each part is a deep future of its own, too deep to nest inline.
        let issuer = self
            .issuer
            .map(|i| Box::pin(i.run_scheduled(shutdown.clone())));
        let consumer = self.consumer.map(|c| Box::pin(c.run(shutdown.clone())));
        let (http, issuer, consumer) = tokio::join!(
            supervise("api", http, &shutdown),
            supervise("issuer", issuer, &shutdown),
            supervise("consumer", consumer, &shutdown),
        );
        http.and(issuer).and(consumer)
    }
}

/// Runs one part, if present, logs how it ended, and stops the others when it fails.
async fn supervise(
    name: &str,
    part: Option<impl Future<Output = anyhow::Result<()>>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let Some(part) = part else { return Ok(()) };
    let outcome = part.await;
    match &outcome {
        Ok(()) => tracing::info!(part = name, "stopped"),
        Err(e) => {
            tracing::error!(part = name, error = ?e, "failed; stopping the others");
            shutdown.cancel();
        }
    }
    outcome
}
