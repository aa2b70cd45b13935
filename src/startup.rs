//! Assembles the service from its settings: connect, migrate, bind, then run the API, the batch
//! issuer and the consumer side by side until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use poem::listener::TcpAcceptor;
use poem::Server;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState, ApplyLimiter, ClientAddress, IdleCutoff, LogReads, RequestGuard};
use crate::auth::Verifier;
use crate::configuration::Settings;
use crate::consumer::IssueConsumer;
use crate::fairness::{LogBuilder, LogKey};
use crate::gate::Gate;
use crate::issuer::Issuer;
use crate::kafka::{self, BrokerProbe, Publisher};
use crate::metrics::Metrics;
use crate::ops::health::Dependencies;
use crate::ops::port::OpsPort;
use crate::ops::Reconciler;
use crate::store;

/// A watcher's query that takes longer is cancelled: the look fails and the next one tries
/// again, and latches it stops confirming stand aside (see `gate::latch`).
const WATCHER_STATEMENT_TIMEOUT: Duration = Duration::from_secs(2);
/// The Redis watcher's PostgreSQL connections: one look a second, plus a restore.
const WATCHER_CONNECTIONS: u32 = 2;

/// The fairness log builder's connections, and how often it appends and signs.
const LOG_BUILDER_CONNECTIONS: u32 = 2;
const LOG_BUILDER_PERIOD: Duration = Duration::from_secs(1);

/// The fairness log's anonymous readers' connections: a crowd of them waits for these, never
/// for the API's.
pub const LOG_READ_CONNECTIONS: u32 = 2;

/// How long in-flight requests may take to finish once shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The parts one process can run; `serve` runs all three unless told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The HTTP API (and the admission gate behind it).
    Api,
    /// The batch issuer: Redis pending → Kafka, on the issuer's schedule.
    Issuer,
    /// The consumer: Kafka → PostgreSQL in batches.
    Consumer,
}

pub struct Application {
    http: Option<Http>,
    /// Watches Redis and rebuilds coupons it lost from PostgreSQL (see `crate::ops::reconcile`).
    reconciler: Reconciler,
    port: Option<u16>,
    issuer: Option<Issuer>,
    consumer: Option<IssueConsumer>,
    /// Appends persisted winners to each event's fairness log (with the consumer).
    log_builder: Option<LogBuilder>,
    /// Metrics and health for operators, whatever the roles.
    ops: OpsPort,
}

/// What every part shares.
struct Shared {
    db: PgPool,
    gate: Gate,
    metrics: Arc<Metrics>,
}

impl Application {
    /// Connects to PostgreSQL (creating and migrating the database), Redis and Kafka (creating
    /// the topics), and binds the listener, so `port()` is known before serving.
    pub async fn build(settings: &Settings, roles: &[Role]) -> anyhow::Result<Self> {
        let secret = settings.auth.checked_secret(settings.env)?;
        settings.kafka.check_properties()?;
        warn_about_development_secret(settings);
        let shared = connect(settings).await?;
        let log_key = log_key(settings)?;
        // Pools of their own: a flood of reads on the API cannot take the watcher's connections.
        let watcher_db = settings
            .database
            .pool_with_timeout(WATCHER_CONNECTIONS, WATCHER_STATEMENT_TIMEOUT)
            .await?;
        let reconciler = Reconciler::new(shared.gate.clone(), watcher_db, settings)
            .with_metrics(shared.metrics.clone());
        hold_lost_coupons(&reconciler).await;
        let (issuer, consumer) = pipeline(settings, roles, &shared).await?;
        let log_builder = match &log_key {
            Some(key) if roles.contains(&Role::Consumer) => Some(LogBuilder::new(
                settings.database.pool_of(LOG_BUILDER_CONNECTIONS).await?,
                shared.gate.clone(),
                key.clone(),
                LOG_BUILDER_PERIOD,
            )),
            _ => None,
        };
        let ops = OpsPort::bind(
            settings,
            shared.metrics.clone(),
            dependencies(settings, roles, &shared)?,
        )
        .await?;
        let http = if roles.contains(&Role::Api) {
            Some(
                Http::bind(
                    settings,
                    shared,
                    secret.as_ref(),
                    log_key,
                    reconciler.books(),
                )
                .await?,
            )
        } else {
            None
        };
        Ok(Self {
            port: http.as_ref().map(|h| h.port),
            http,
            reconciler,
            issuer,
            consumer,
            log_builder,
            ops,
        })
    }

    /// A handle on this process's fairness log builder, for running it by hand.
    pub fn log_builder(&self) -> Option<LogBuilder> {
        self.log_builder.clone()
    }

    /// The bound ops port (`/metrics`, `/health/*`).
    pub fn ops_port(&self) -> u16 {
        self.ops.port()
    }

    /// The bound HTTP port, when this process runs the API.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// A handle on this process's batch issuer, for running ticks by hand.
    pub fn issuer(&self) -> Option<Issuer> {
        self.issuer.clone()
    }

    /// Takes this process's consumer out, to run batches by hand (`IssueConsumer::run_once`);
    /// the process then runs without one.
    pub fn take_consumer(&mut self) -> Option<IssueConsumer> {
        self.consumer.take()
    }

    /// Runs every part until `shutdown` is cancelled (or one part fails, which stops the rest):
    /// the API stops accepting and drains, the issuer finishes its tick and flushes, the
    /// consumer finishes or abandons (uncommitted) its batch.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let http = self.http.map(|http| {
            let shutdown = shutdown.clone();
            tokio::spawn(sweep_rate_limits(
                http.state.limiter.clone(),
                http.state.user_reads.clone(),
                shutdown.clone(),
            ));
            tokio::spawn(count_applications(
                http.state.gate.clone(),
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
        let ops = Some(Box::pin(self.ops.serve(shutdown.clone())));
        let log = self.log_builder.map(|b| Box::pin(b.run(shutdown.clone())));
        let (http, issuer, consumer, ops, log, ()) = tokio::join!(
            supervise("api", http, &shutdown),
            supervise("issuer", issuer, &shutdown),
            supervise("consumer", consumer, &shutdown),
            supervise("ops port", ops, &shutdown),
            supervise("fairness log", log, &shutdown),
            self.reconciler.watch(shutdown.clone()),
        );
        http.and(issuer).and(consumer).and(ops).and(log)
    }
}

/// The checkpoint signing key, announced: its verifier key is what customers check against.
fn log_key(settings: &Settings) -> anyhow::Result<Option<Arc<LogKey>>> {
    let Some(key) = settings.fairness.key(settings.env)? else {
        tracing::info!("APP_FAIRNESS__ENABLED=false: no fairness log");
        return Ok(None);
    };
    if key.is_development() {
        tracing::warn!(
            verifier_key = key.verifier_key(),
            "fairness log signed with the built-in DEVELOPMENT key; set APP_FAIRNESS__SIGNING_KEY_FILE"
        );
    } else {
        tracing::info!(
            verifier_key = key.verifier_key(),
            "fairness log checkpoints signed"
        );
    }
    Ok(Some(Arc::new(key)))
}

fn warn_about_development_secret(settings: &Settings) {
    if settings.auth.local_tokens(settings.env) && settings.auth.uses_development_secret() {
        tracing::warn!(
            "APP_AUTH__JWT_SECRET is not set: using the built-in DEVELOPMENT secret. \
             Anyone can mint tokens for this instance. Never run it like this in production."
        );
    }
}

/// PostgreSQL (the database created if missing, then migrated, unless `APP_DATABASE__MIGRATE`
/// is false), Redis and the metrics.
async fn connect(settings: &Settings) -> anyhow::Result<Shared> {
    let transport = settings.database.transport(settings.env)?;
    tracing::info!(transport, "PostgreSQL connection");
    if settings.database.migrate {
        settings.database.create_if_missing().await?;
    }
    let db = settings.database.pool().await?;
    if settings.database.migrate {
        store::migrate(&db).await?;
    } else {
        tracing::info!("APP_DATABASE__MIGRATE=false: not creating or migrating the database");
    }
    let metrics = Metrics::new();
    let gate = (settings.redis.gate()?)
        .with_metrics(metrics.clone())
        .with_batching(&settings.gate);
    Ok(Shared { db, gate, metrics })
}

/// Holds lost coupons before serving, so no application meets an empty queue; the rest (settle,
/// restore) runs beside the other parts. Redis being down is not fatal here: the watcher looks
/// again every second.
async fn hold_lost_coupons(reconciler: &Reconciler) {
    match reconciler.hold_before_serving().await {
        Ok(held) if !held.is_empty() => {
            tracing::warn!(coupons = held.len(), "restoring coupons Redis lost")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = ?e, "could not check Redis for lost coupons yet"),
    }
}

/// What readiness checks for `roles`: the API reads Redis and PostgreSQL; the issuer moves Redis
/// to Kafka; the consumer moves Kafka to PostgreSQL and marks Redis.
fn dependencies(
    settings: &Settings,
    roles: &[Role],
    shared: &Shared,
) -> anyhow::Result<Dependencies> {
    let has = |role| roles.contains(&role);
    Ok(Dependencies {
        redis: Some(shared.gate.clone()),
        postgres: (has(Role::Api) || has(Role::Consumer)).then(|| shared.db.clone()),
        kafka: if has(Role::Issuer) || has(Role::Consumer) {
            Some(BrokerProbe::new(&settings.kafka)?)
        } else {
            None
        },
    })
}

/// The batch issuer and the consumer, as far as `roles` asks for them; the topics are created
/// first when either runs.
async fn pipeline(
    settings: &Settings,
    roles: &[Role],
    shared: &Shared,
) -> anyhow::Result<(Option<Issuer>, Option<IssueConsumer>)> {
    let (issues, consumes) = (
        roles.contains(&Role::Issuer),
        roles.contains(&Role::Consumer),
    );
    if !issues && !consumes {
        return Ok((None, None));
    }
    if settings.kafka.create_topics {
        kafka::ensure_topics(&settings.kafka).await?;
    } else {
        tracing::info!("APP_KAFKA__CREATE_TOPICS=false: the topics must exist already");
    }
    let publisher = Publisher::new(&settings.kafka, settings.issuer.send_timeout())?;
    let issuer = issues.then(|| {
        Issuer::new(
            shared.gate.clone(),
            publisher.clone(),
            settings.issuer.clone(),
            settings.claim_window(),
            shared.metrics.clone(),
        )
    });
    let consumer = if consumes {
        let db = settings
            .database
            .pool_of(settings.database.consumer_connections)
            .await?;
        Some(IssueConsumer::new(
            &settings.kafka,
            settings.consumer.clone(),
            db,
            shared.gate.clone(),
            publisher,
            shared.metrics.clone(),
        )?)
    } else {
        None
    };
    Ok((issuer, consumer))
}

/// The API's parts, bound and ready to serve.
struct Http {
    listener: TcpListener,
    port: u16,
    state: AppState,
    guard: RequestGuard,
    idle_timeout: Duration,
}

impl Http {
    async fn bind(
        settings: &Settings,
        shared: Shared,
        secret: Option<&SecretString>,
        fairness: Option<Arc<LogKey>>,
        books: Option<Arc<crate::ops::reconcile::Books>>,
    ) -> anyhow::Result<Self> {
        let limiter = ApplyLimiter::new(&settings.rate_limit, &shared.gate);
        let rehearsal = settings.auth.checked_rehearsal_secret(settings.env)?;
        let tokens = Arc::new(Verifier::with_rehearsals(
            &settings.auth,
            secret,
            rehearsal.as_ref(),
        )?);
        // The provider's keys before the first caller: a wrong URL must not start "ready".
        if let Err(e) = tokens.prime().await {
            if settings.env == crate::configuration::Environment::Production {
                return Err(e);
            }
            tracing::warn!(error = format!("{e:#}"), "starting without the identity provider's keys; tokens it signed answer 503 until they can be fetched");
        }
        let state = AppState {
            gate: shared.gate,
            db: shared.db,
            tokens,
            broker: BrokerProbe::new(&settings.kafka)?,
            kafka: settings.kafka.clone(),
            apply_permits: Arc::new(tokio::sync::Semaphore::new(
                settings.http.apply_concurrency.max(1),
            )),
            limiter: Arc::new(limiter),
            client_address: Arc::new(ClientAddress::new(&settings.http.trusted_proxies)?),
            list_cache: Arc::default(),
            ready_cache: Arc::default(),
            event_cache: Arc::default(),
            user_reads: Arc::default(),
            stats_cache: Arc::default(),
            metrics: shared.metrics,
            status_poll: settings.issuer.period()?,
            fairness,
            log_cache: Arc::default(),
            log_reads: Arc::new(LogReads::new(
                settings
                    .database
                    .pool_with_timeout(LOG_READ_CONNECTIONS, api::LOG_READ_TIMEOUT)
                    .await?,
            )),
            rehearsals: Arc::default(),
            books,
        };
        let listener = TcpListener::bind(&settings.http.addr)
            .await
            .with_context(|| format!("binding {}", settings.http.addr))?;
        Ok(Self {
            port: listener.local_addr()?.port(),
            listener,
            state,
            guard: RequestGuard::new(&settings.http),
            idle_timeout: settings.http.idle_timeout(),
        })
    }
}

/// Drops the rate limiters' idle buckets and expired poll answers now and then, so their
/// memory follows recent clients.
async fn sweep_rate_limits(
    limiter: Arc<ApplyLimiter>,
    user_reads: Arc<api::UserReads>,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(api::SWEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = every.tick() => {
                limiter.sweep();
                user_reads.sweep();
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Adds the applications this instance answered to the events' counts every second (what the
/// dashboard shows), and once more when stopping.
async fn count_applications(gate: crate::gate::Gate, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = every.tick() => gate.flush_counts().await,
            _ = shutdown.cancelled() => return gate.flush_counts().await,
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
