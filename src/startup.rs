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

use crate::api::{self, AppState, ApplyLimiter, IdleCutoff, RequestGuard};
use crate::auth::TokenKeys;
use crate::configuration::Settings;
use crate::consumer::IssueConsumer;
use crate::issuer::Issuer;
use crate::kafka::{self, BrokerProbe, Publisher};
use crate::metrics::Metrics;
use crate::reconcile::Reconciler;
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
    http: Option<Http>,
    /// Rebuilds coupons Redis lost from PostgreSQL (see `crate::reconcile`).
    reconciler: Reconciler,
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
        let reconciler = Reconciler::new(gate.clone(), db.clone(), settings.kafka.clone());
        // Hold lost coupons before serving, so no application meets an empty queue; the rest
        // (drain, restore) runs beside the other parts. Redis being down is not fatal here:
        // the same step is retried there.
        match reconciler.hold_missing().await {
            Ok(held) if !held.is_empty() => {
                tracing::warn!(coupons = held.len(), "restoring coupons Redis lost")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = ?e, "could not check Redis for lost coupons yet"),
        }
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
                limiter: Arc::new(ApplyLimiter::new(&settings.rate_limit)),
                metrics,
                issuer_period: STATUS_POLL_INTERVAL,
            };
            let listener = TcpListener::bind(&settings.http.addr)
                .await
                .with_context(|| format!("binding {}", settings.http.addr))?;
            let port = listener.local_addr()?.port();
            let http = Http {
                listener,
                state,
                guard: RequestGuard::new(&settings.http),
                idle_timeout: settings.http.idle_timeout(),
            };
            (Some(http), Some(port))
        } else {
            (None, None)
        };
        Ok(Self {
            http,
            reconciler,
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
        let http = self.http.map(|http| {
            let shutdown = shutdown.clone();
            tokio::spawn(sweep_rate_limits(
                http.state.limiter.clone(),
                shutdown.clone(),
            ));
            Box::pin(async move {
                let acceptor = TcpAcceptor::from_tokio(http.listener)?;
                Server::new_with_acceptor(IdleCutoff::new(acceptor, http.idle_timeout))
                    .run_with_graceful_shutdown(
                        api::app(http.state, http.guard),
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
        let (http, issuer, consumer, ()) = tokio::join!(
            supervise("api", http, &shutdown),
            supervise("issuer", issuer, &shutdown),
            supervise("consumer", consumer, &shutdown),
            self.reconciler.run_until_done(shutdown.clone()),
        );
        http.and(issuer).and(consumer)
    }
}

/// The API's parts, bound and ready to serve.
struct Http {
    listener: TcpListener,
    state: AppState,
    guard: RequestGuard,
    idle_timeout: Duration,
}

/// Drops the rate limiter's idle buckets now and then, so its memory follows recent clients.
async fn sweep_rate_limits(limiter: Arc<ApplyLimiter>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(api::SWEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = every.tick() => limiter.sweep(),
            _ = shutdown.cancelled() => return,
        }
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
