//! The admission gate: Redis decides who gets in, in arrival order, one Lua script per apply.
//! PostgreSQL is never touched on this path.

mod admission;
mod batching;
mod census;
mod confirm;
mod connections;
mod counting;
mod drop;
mod inspect;
mod issuing;
mod keys;
mod latch;
mod limits;
mod line;
mod locks;
mod losers;
mod rebuild;
mod recovery;
mod snapshot;
mod told;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use chrono::{DateTime, Utc};
use redis::{ErrorKind, RedisError, ServerErrorKind};
use secrecy::ExposeSecret;

pub use admission::{Admission, Ticket};
pub use census::Census;
pub use connections::RedisConnection;
pub use inspect::GateState;
pub use issuing::{Backlog, Claim};
pub use keys::CouponKeys;
pub use limits::Bucket;
pub use line::Holder;
pub use recovery::{HoldId, HoldReason, Restoration, Standing, Survey, LOST_PREFIX};
pub use snapshot::Snapshot;

use crate::domain::CouponId;

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// Redis cannot be reached or is not serving; nothing was admitted.
    #[error("Redis is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// The coupon is held until it is restored from PostgreSQL (see `crate::ops::reconcile`).
    #[error("the coupon is being restored")]
    Held,
    /// The coupon's Redis copy was retired after it finished: read it from PostgreSQL.
    #[error("the coupon's Redis copy was retired")]
    Retired,
    /// Written on the master, not confirmed by `APP_REDIS__ACK_REPLICAS` replicas in time.
    #[error("the write is not confirmed by the replicas")]
    NotReplicated,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl GateError {
    /// The same error for another caller: one failed batch call is every member's failure.
    fn shared(&self) -> Self {
        let cause = || anyhow!("{self:#}");
        match self {
            GateError::Unavailable(_) => GateError::Unavailable(cause()),
            GateError::Held => GateError::Held,
            GateError::Retired => GateError::Retired,
            GateError::NotReplicated => GateError::NotReplicated,
            GateError::Unexpected(_) => GateError::Unexpected(cause()),
        }
    }
}

impl From<RedisError> for GateError {
    fn from(e: RedisError) -> Self {
        if e.kind() == ErrorKind::Server(ServerErrorKind::TryAgain)
            && e.detail().is_some_and(|d| d.contains("being restored"))
        {
            return GateError::Held;
        }
        // A transaction (MULTI/EXEC) that a cluster refused is aborted with the reason inside.
        let kind = match e.kind() {
            ErrorKind::Server(ServerErrorKind::ExecAbort) => e
                .clone()
                .into_server_errors()
                .and_then(|errors| errors.first().and_then(|(_, error)| error.kind()))
                .map_or(e.kind(), ErrorKind::Server),
            kind => kind,
        };
        let down = e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || matches!(
                kind,
                ErrorKind::AuthenticationFailed
                    | ErrorKind::Server(
                        ServerErrorKind::BusyLoading
                            | ServerErrorKind::TryAgain
                            | ServerErrorKind::ClusterDown
                            | ServerErrorKind::MasterDown
                            | ServerErrorKind::ReadOnly
                    )
            );
        if down {
            GateError::Unavailable(e.into())
        } else {
            GateError::Unexpected(anyhow::Error::new(e).context("Redis answered with an error"))
        }
    }
}

impl crate::configuration::RedisSettings {
    /// The gate over these settings' Redis and key prefix.
    pub fn gate(&self) -> anyhow::Result<Gate> {
        let connector = Arc::new(self.connector()?);
        let mut gate = Gate::new(
            connector.clone(),
            self.pool_size,
            &self.key_prefix,
            self.timeout(),
        );
        if self.ack_replicas > 0 {
            // A confirmation is only true of the server that ran the writes: its `WAIT` is
            // never retried, by the gate or by a cluster client, since a retry could reach the
            // server that replaced it and confirm writes that died with the old one.
            let mut own = Gate::new(
                Arc::new(self.connector_without_retries()?),
                1,
                &self.key_prefix,
                self.timeout(),
            );
            own.retry = false;
            gate.ack = Some(Arc::new(confirm::Confirmer::new(
                own,
                self.ack_replicas,
                self.ack_timeout(),
            )));
        }
        Ok(gate)
    }

    /// One connection to these settings' Redis, whatever its mode (for tools and tests).
    pub async fn connect(&self) -> anyhow::Result<RedisConnection> {
        self.connector()?.open().await
    }

    fn connector_without_retries(&self) -> anyhow::Result<connections::Connector> {
        Ok(match self.mode {
            crate::configuration::RedisMode::Cluster => {
                connections::Connector::Cluster(Box::new(self.cluster_client(0)?))
            }
            _ => self.connector()?,
        })
    }

    fn connector(&self) -> anyhow::Result<connections::Connector> {
        use crate::configuration::RedisMode;
        Ok(match self.mode {
            RedisMode::Standalone if self.tls() => {
                let certificates = self.certificates()?;
                let client = redis::Client::build_with_tls(self.url.expose_secret(), certificates)
                    .map_err(|e| anyhow!(e).context("APP_REDIS__URL over TLS"))?;
                connections::Connector::Tls(Box::new(client))
            }
            RedisMode::Standalone => connections::Connector::Server(self.pool()?),
            RedisMode::Sentinel if self.tls() => connections::Connector::Sentinel(Box::new(
                tokio::sync::Mutex::new(self.sentinel_client_over_tls()?),
            )),
            RedisMode::Sentinel => {
                let url = self.url_info()?;
                let master = redis::sentinel::SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(url.redis_settings().clone());
                let client = redis::sentinel::SentinelClient::build(
                    self.node_urls(),
                    self.sentinel_master.clone(),
                    Some(master),
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(|e| anyhow!(e).context("APP_REDIS__NODES"))?;
                connections::Connector::Sentinel(Box::new(tokio::sync::Mutex::new(client)))
            }
            RedisMode::Cluster => {
                connections::Connector::Cluster(Box::new(self.cluster_client(CLUSTER_RETRIES)?))
            }
        })
    }

    /// `APP_REDIS__URL`, parsed: its scheme and credentials serve every mode.
    fn url_info(&self) -> anyhow::Result<redis::ConnectionInfo> {
        redis::IntoConnectionInfo::into_connection_info(self.url.expose_secret())
            .map_err(|e| anyhow!(e).context("APP_REDIS__URL is not a valid Redis URL"))
    }

    /// `rediss://` (a scheme is any case): every connection of the gate speaks TLS, whatever
    /// the mode. Read from the parsed address, so that what is reported and what connects
    /// cannot disagree.
    pub fn tls(&self) -> bool {
        matches!(
            self.url_info().map(|info| info.addr().clone()),
            Ok(redis::ConnectionAddr::TcpTls { .. })
        )
    }

    /// The CA that signed the servers' certificates (`APP_REDIS__CA_FILE`), or the system's.
    fn certificates(&self) -> anyhow::Result<redis::TlsCertificates> {
        let root_cert = match &self.ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("APP_REDIS__CA_FILE: reading {}", path.display()))?,
            ),
            None => None,
        };
        Ok(redis::TlsCertificates {
            client_tls: None,
            root_cert,
        })
    }

    /// Sentinels and the master they name, both over TLS, both verified against the same CA;
    /// the URL's user and password are the master's.
    fn sentinel_client_over_tls(&self) -> anyhow::Result<redis::sentinel::SentinelClient> {
        use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
        let url = self.url_info()?;
        let mut sentinels = Vec::new();
        for node in self.node_urls() {
            let tls_node = node.replacen("redis://", "rediss://", 1);
            let info = redis::IntoConnectionInfo::into_connection_info(tls_node.as_str())
                .map_err(|e| anyhow!(e).context("APP_REDIS__NODES"))?;
            sentinels.push(info.addr().clone());
        }
        let certificates = self.certificates()?;
        let master = self.sentinel_master.clone();
        let mut builder = SentinelClientBuilder::new(sentinels, master, SentinelServerType::Master)
            .map_err(|e| anyhow!(e).context("APP_REDIS__NODES"))?
            .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure)
            .set_client_to_sentinel_certificates(certificates.clone())
            .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
            .set_client_to_redis_certificates(certificates);
        if let Some(user) = url.redis_settings().username() {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(password) = url.redis_settings().password() {
            builder = builder.set_client_to_redis_password(password);
        }
        builder
            .build()
            .map_err(|e| anyhow!(e).context("APP_REDIS__NODES over TLS"))
    }

    /// A client of the cluster whose seed nodes `APP_REDIS__NODES` names; the URL's user and
    /// password apply to every node. It retries a call `retries` times through redirections
    /// and topology changes (within the gate's timeout).
    fn cluster_client(&self, retries: u32) -> anyhow::Result<redis::cluster::ClusterClient> {
        let url = self.url_info()?;
        let mut nodes = self.node_urls();
        if self.tls() {
            nodes = (nodes.iter())
                .map(|n| n.replacen("redis://", "rediss://", 1))
                .collect();
        }
        let mut builder = redis::cluster::ClusterClientBuilder::new(nodes)
            .connection_timeout(self.timeout())
            .response_timeout(self.timeout())
            .retries(retries);
        if self.tls() {
            builder = builder
                .tls(redis::TlsMode::Secure)
                .certs(self.certificates()?);
        }
        if let Some(user) = url.redis_settings().username() {
            builder = builder.username(user);
        }
        if let Some(password) = url.redis_settings().password() {
            builder = builder.password(password);
        }
        builder
            .build()
            .map_err(|e| anyhow!(e).context("APP_REDIS__NODES"))
    }
}

/// The cluster client's own default: enough to follow a failover, bounded by the gate's timeout.
const CLUSTER_RETRIES: u32 = 16;

/// A cheap handle (clone it freely) on the Redis side of the pipeline.
#[derive(Clone)]
pub struct Gate {
    connections: Arc<connections::Connections>,
    /// The configured key prefix; every key of the service starts with it.
    pub(super) prefix: Arc<str>,
    /// Upper bound for one call, pool wait included.
    timeout: Duration,
    /// Counts failed calls, when the gate belongs to a running service.
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// When set, admissions are answered and winners published only once replicated.
    ack: Option<Arc<confirm::Confirmer>>,
    /// Coupons PostgreSQL has, as last seen (the watcher refreshes it every second): Redis
    /// not knowing one of them means its state was lost, so the answer is 503, never 404.
    known: Arc<std::sync::RwLock<HashSet<CouponId>>>,
    /// Redis Cluster: a call's keys must share a slot, and servers are per shard.
    cluster: bool,
    /// Whether a call that met a dropped connection is tried once more (see `run`).
    retry: bool,
    /// Sold-out events answered here without Redis (see `latch`).
    latches: Arc<latch::Latches>,
    /// Applications answered here, added to Redis once a second (see `counting`).
    counts: Arc<counting::Counts>,
    /// Coupons whose Redis copy was retired: Redis not knowing one is expected, and its reads
    /// come from PostgreSQL.
    retired: Arc<std::sync::RwLock<HashSet<CouponId>>>,
    /// Tickets told here and not yet persisted (see `told`).
    told: Arc<told::Told>,
    /// Applications to one event sent together (see `batching`); `None`: one call each.
    batching: Option<Arc<batching::Batching>>,
}

impl Gate {
    /// `connections`: how many multiplexed connections every request shares.
    fn new(
        connector: Arc<connections::Connector>,
        connections: usize,
        prefix: &str,
        timeout: Duration,
    ) -> Self {
        Self {
            cluster: connector.is_cluster(),
            retry: true,
            latches: Arc::default(),
            counts: Arc::default(),
            connections: Arc::new(connections::Connections::new(connector, connections)),
            prefix: prefix.into(),
            timeout,
            metrics: None,
            ack: None,
            known: Arc::default(),
            retired: Arc::default(),
            told: Arc::default(),
            batching: None,
        }
    }

    /// Sends the applications to one event that arrive within `settings`' window together.
    pub fn with_batching(mut self, settings: &crate::configuration::GateSettings) -> Self {
        self.batching = (settings.batch_window_us > 0 && settings.batch_max > 1).then(|| {
            Arc::new(batching::Batching::new(
                settings.batch_window(),
                settings.batch_max,
            ))
        });
        self
    }

    /// Events this instance keeps batching state for: only those with a batch open or in
    /// flight (0 with batching off).
    pub fn batching_events(&self) -> usize {
        self.batching.as_ref().map_or(0, |b| b.lanes())
    }

    /// The batch window in effect here, µs (0: one call per application).
    pub fn batch_window_us(&self) -> u32 {
        self.batching.as_ref().map_or(0, |b| b.window_us())
    }

    /// Counts one batch of `size` applications sent to Redis.
    fn observe_batch(&self, size: usize) {
        if let Some(metrics) = &self.metrics {
            metrics.apply_batch_size.observe(size as f64);
        }
    }

    /// Remembers coupons PostgreSQL has (all of them, or one just created).
    pub fn remember(&self, coupons: impl IntoIterator<Item = CouponId>) {
        locks::write(&self.known).extend(coupons);
    }

    /// Forgets coupons PostgreSQL no longer has (a rehearsal deleted on another instance):
    /// Redis lacking them then means unknown (404), not lost (503).
    pub fn forget(&self, coupons: impl IntoIterator<Item = CouponId>) {
        let mut known = locks::write(&self.known);
        for coupon in coupons {
            known.remove(&coupon);
        }
    }

    /// The coupons this instance knows exist.
    pub fn known(&self) -> HashSet<CouponId> {
        locks::read(&self.known).clone()
    }

    /// Remembers a coupon Redis just answered for: if its state is lost later, this instance
    /// knows it existed before the watcher's next look at PostgreSQL.
    fn seen(&self, coupon: CouponId) {
        let known = locks::read(&self.known).contains(&coupon);
        if !known {
            self.remember([coupon]);
        }
    }

    /// Remembers coupons whose Redis copy was retired.
    pub fn note_retired(&self, coupons: impl IntoIterator<Item = CouponId>) {
        locks::write(&self.retired).extend(coupons);
    }

    /// What a coupon Redis does not have means: retired (read PostgreSQL), lost state (503)
    /// for one PostgreSQL has, or unknown.
    fn unknown(&self, coupon: CouponId) -> Result<(), GateError> {
        let retired = locks::read(&self.retired).contains(&coupon);
        if retired {
            return Err(GateError::Retired);
        }
        let known = locks::read(&self.known).contains(&coupon);
        if known {
            Err(GateError::Held)
        } else {
            Ok(())
        }
    }

    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn keys(&self, coupon: CouponId) -> CouponKeys {
        CouponKeys::new(&self.prefix, coupon)
    }

    /// Puts a coupon on the issuer's registry.
    pub async fn enlist(&self, coupon: CouponId) -> Result<(), GateError> {
        let registry = self.registry_key();
        let registry = &registry;
        self.run(|mut conn| async move {
            redis::cmd("SADD")
                .arg(registry)
                .arg(coupon.get())
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    /// Forgets a coupon and everything the gate holds for it (a creation that could not be
    /// committed, or a benchmark's throw-away coupon).
    pub async fn unregister(&self, coupon: CouponId) -> Result<(), GateError> {
        let keys = self.keys(coupon);
        let keys = &keys;
        let registry = self.registry_key();
        let registry = &registry;
        self.run(|mut conn| async move {
            redis::cmd("SREM")
                .arg(registry)
                .arg(coupon.get())
                .query_async::<()>(&mut conn)
                .await?;
            redis::cmd("DEL")
                .arg(&keys.all()[..])
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    pub async fn ping(&self) -> Result<(), GateError> {
        self.run(|mut conn| async move { redis::cmd("PING").query_async::<()>(&mut conn).await })
            .await
    }

    /// Runs one Redis interaction on a shared connection, bounded by the configured timeout. A
    /// connection found dropped (Redis restarted, the network blipped) is replaced and the
    /// interaction tried once more: every script here is safe to repeat (a repeated apply returns
    /// the same ticket; a repeated claim only waits for its lease).
    async fn run<T, F, Fut>(&self, work: F) -> Result<T, GateError>
    where
        F: Fn(connections::RedisConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let attempts = async {
            let mut retried = None;
            loop {
                let (slot, conn) = match retried {
                    None => self.connections.get().await,
                    Some(slot) => self.connections.get_at(slot).await,
                }
                .map_err(GateError::Unavailable)?;
                match work(conn).await {
                    Ok(value) => return Ok(value),
                    Err(e) => {
                        let dropped = e.is_connection_dropped() || e.is_io_error();
                        // A master demoted by a failover answers READONLY: reconnect, so the
                        // sentinels name the new one (after which one more try may succeed).
                        let demoted = e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly);
                        if dropped || demoted {
                            self.connections.discard(slot).await;
                        }
                        if !(dropped || demoted) || retried.is_some() || !self.retry {
                            return Err(GateError::from(e));
                        }
                        retried = Some(slot);
                    }
                }
            }
        };
        let outcome = tokio::time::timeout(self.timeout, attempts)
            .await
            .map_err(|_| GateError::Unavailable(anyhow!("Redis did not answer in time")))
            .and_then(|r| r);
        if let (Err(_), Some(metrics)) = (&outcome, &self.metrics) {
            metrics.dependency_error(crate::metrics::Dependency::redis);
        }
        outcome
    }
}

/// Scores and timestamps are stored as microseconds since the epoch.
fn micros_to_time(us: i64) -> anyhow::Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| anyhow!("timestamp {us} µs out of range"))
}

fn parse_field<T: std::str::FromStr>(value: &str, what: &str) -> anyhow::Result<T> {
    value
        .parse()
        .map_err(|_| anyhow!("Redis holds an invalid {what}: {value:?}"))
}
