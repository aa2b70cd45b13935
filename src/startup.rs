//! Assembles the service from its settings: connect, migrate, bind, serve.

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
use crate::gate::Gate;
use crate::kafka::BrokerProbe;
use crate::store;

/// How long in-flight requests may take to finish once shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Application {
    listener: TcpListener,
    port: u16,
    state: AppState,
}

impl Application {
    /// Connects to PostgreSQL (creating and migrating the database), Redis and Kafka, and binds
    /// the listener, so `port()` is known before serving (tests bind port 0).
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        if settings.auth.uses_development_secret() {
            tracing::warn!(
                "APP_AUTH__JWT_SECRET is not set: using the built-in DEVELOPMENT secret. \
                 Anyone can mint tokens for this instance. Never run it like this in production."
            );
        }
        let db = settings.database.pool().await?;
        store::migrate(&db).await?;
        let state = AppState {
            gate: Gate::new(
                settings.redis.pool()?,
                &settings.redis.key_prefix,
                settings.redis.timeout(),
            ),
            db,
            tokens: Arc::new(TokenKeys::new(&settings.auth.secret())),
            broker: BrokerProbe::new(&settings.kafka)?,
            issuer_period: Duration::from_secs(1),
        };
        let listener = TcpListener::bind(&settings.http.addr)
            .await
            .with_context(|| format!("binding {}", settings.http.addr))?;
        let port = listener.local_addr()?.port();
        Ok(Self {
            listener,
            port,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown` is cancelled, then stops accepting and drains open requests.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let acceptor = TcpAcceptor::from_tokio(self.listener)?;
        Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(
                api::app(self.state),
                shutdown.cancelled_owned(),
                Some(DRAIN_TIMEOUT),
            )
            .await
            .context("HTTP server failed")
    }
}
