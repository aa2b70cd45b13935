//! The admission gate: Redis decides who gets in, in arrival order, one Lua script per apply.
//! PostgreSQL is never touched on this path.

mod admission;
mod connections;
mod inspect;
mod issuing;
mod keys;
mod recovery;
mod snapshot;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use deadpool_redis::Pool;
use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, RedisError, ServerErrorKind};

pub use admission::{Admission, Ticket};
pub use inspect::GateState;
pub use issuing::{Backlog, Claim};
pub use keys::CouponKeys;
pub use recovery::LOST_PREFIX;
pub use snapshot::Snapshot;

use crate::domain::{Coupon, CouponId};

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// Redis cannot be reached or is not serving; nothing was admitted.
    #[error("Redis is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<RedisError> for GateError {
    fn from(e: RedisError) -> Self {
        let down = e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || matches!(
                e.kind(),
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
        Ok(Gate::new(
            self.pool()?,
            self.pool_size,
            &self.key_prefix,
            self.timeout(),
        ))
    }
}

/// A cheap handle (clone it freely) on the Redis side of the pipeline.
#[derive(Clone)]
pub struct Gate {
    connections: Arc<connections::Connections>,
    /// The configured key prefix; every key of the service starts with it.
    prefix: Arc<str>,
    /// Upper bound for one call, pool wait included.
    timeout: Duration,
    /// Counts failed calls, when the gate belongs to a running service.
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl Gate {
    /// `connections`: how many multiplexed connections every request shares.
    pub fn new(pool: Pool, connections: usize, prefix: &str, timeout: Duration) -> Self {
        Self {
            connections: Arc::new(connections::Connections::new(pool, connections)),
            prefix: prefix.into(),
            timeout,
            metrics: None,
        }
    }

    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn keys(&self, coupon: CouponId) -> CouponKeys {
        CouponKeys::new(&self.prefix, coupon)
    }

    /// Makes a coupon known to the gate. Called once, when the event is created.
    pub async fn register(&self, coupon: &Coupon) -> Result<(), GateError> {
        let keys = self.keys(coupon.id);
        let keys = &keys;
        let fields = recovery::meta_fields(coupon);
        let fields = &fields;
        // Two slots (the coupon's and the registry's), so two commands; creation undoes both
        // through `unregister` when it cannot commit.
        self.run(|mut conn| async move {
            redis::cmd("HSET")
                .arg(&keys.meta)
                .arg(fields)
                .query_async::<()>(&mut conn)
                .await
        })
        .await?;
        self.enlist(coupon.id).await
    }

    /// Puts a coupon on the issuer's registry.
    async fn enlist(&self, coupon: CouponId) -> Result<(), GateError> {
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
                .arg(&keys.meta)
                .arg(&keys.seq)
                .arg(&keys.queue)
                .arg(&keys.pending)
                .arg(&keys.inflight)
                .arg(&keys.status)
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
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let attempts = async {
            let mut retried = false;
            loop {
                let (slot, conn) = self.connections.get().await.map_err(|e| {
                    GateError::Unavailable(anyhow!(e).context("no Redis connection"))
                })?;
                match work(conn).await {
                    Ok(value) => return Ok(value),
                    Err(e) => {
                        let dropped = e.is_connection_dropped() || e.is_io_error();
                        if dropped {
                            self.connections.discard(slot).await;
                        }
                        if !dropped || retried {
                            return Err(GateError::from(e));
                        }
                        retried = true;
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
