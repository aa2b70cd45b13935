//! Recovery from Redis losing or regressing its state. PostgreSQL is the durable record of who
//! won; Redis is the gate. Every instance watches, once a second, for:
//!
//! - a coupon PostgreSQL has and Redis does not (a restart without persistence, a flush,
//!   deleted keys; the registry set may be gone too, so the list comes from PostgreSQL);
//! - a regression: Redis admitted fewer than PostgreSQL's highest persisted position (a
//!   failover to a replica that missed writes, an AOF that lost its last second);
//! - a changed server (`run_id`: a restart or a failover), which may have lost writes that are
//!   published but not persisted yet, so not visible as a regression. Only with
//!   `APP_REDIS__ACK_REPLICAS=0`: with replicas confirming, the issuer publishes only replicated
//!   admissions, so a promoted replica holds everything published. The identity last seen is
//!   kept in PostgreSQL (`redis_lineage`), so a restart while every instance was down is seen
//!   when they come back.
//!
//! Every look also puts back on the issuer's registry any event with work that is missing from
//! it (a lost `SADD`, a failover that kept the event but not the registry), and records in
//! PostgreSQL the highest position each gate handed out (`coupon.admitted_high`).
//!
//! Such a coupon is restored in three steps, each safe to repeat and to run from every instance
//! at once:
//!
//! 1. hold: applications and position reads answer 503 (never 404), the issuer claims nothing;
//!    the hold has an identity;
//! 2. settle: wait until every send that could have started before the hold has landed or
//!    failed: a claim's send starts within `Settings::claim_window` of the claim or never (the
//!    issuer abandons it), and lasts at most the producer's send timeout. Then wait until the
//!    consumer group has committed everything on the issue topic, so every published winner is
//!    persisted;
//! 3. restore: one script rebuilds the line from the persisted winners and what Redis still
//!    holds (see restore.lua) and lifts the hold, only if it is still the hold this task waited
//!    out (a newer one gets its own settle). The first instance to get there does it.
//!
//! What this cannot bring back: winners admitted but not yet published when Redis lost its
//! memory, unless `APP_REDIS__ACK_REPLICAS` made their 202 wait for a replica, or the instance
//! that told them is alive and writes its ticket back (see `gate::told`). Every position up to
//! the highest one recorded stays spent (placeholders), and Redis holding fewer than that is a
//! regression, so nobody else is told a place a lost winner was told; see README for what is
//! left.

mod books;
mod look;
mod settle;

pub use books::Books;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::configuration::{KafkaSettings, Settings};
use crate::domain::{Coupon, CouponId};
use crate::gate::Gate;
use crate::metrics::Metrics;
use look::Held;

/// How often every instance looks at Redis: detection takes at most this plus one look.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);
/// The longest one look may take before it is abandoned for the next.
const LOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// Added to the settle: a delivery report on its way, a clock tick.
const SETTLE_MARGIN: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct Reconciler {
    gate: Gate,
    db: PgPool,
    kafka: KafkaSettings,
    /// `APP_REDIS__KEY_PREFIX`: the Redis lineage is remembered per prefix.
    prefix: String,
    /// The longest a send started before a hold can take to land or fail, counted from the
    /// hold: the claim window and the producer's send timeout.
    settle: Duration,
    /// `APP_REDIS__ACK_REPLICAS=0`: hold every coupon when the Redis server changes (see the
    /// module documentation); with replicas confirming, a promoted replica holds everything
    /// published.
    hold_on_server_change: bool,
    /// `APP_REDIS__RETENTION_SECS`; `None` keeps finished events in Redis.
    retention: Option<Duration>,
    /// Counts holds and restores, when this runs inside the service.
    metrics: Option<Arc<Metrics>>,
    /// The live books (see `books`), when this runs inside the service.
    books: Option<Arc<Books>>,
    /// Coupons the gate knew that the last look did not find in PostgreSQL: forgotten if the
    /// next look does not find them either (deleted, not merely created after the read).
    absent: Arc<std::sync::Mutex<HashSet<CouponId>>>,
}

/// One coupon brought back.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Restored {
    pub coupon_id: i64,
    /// Persisted winners written back as ISSUED.
    pub winners: u64,
    /// Winners only Redis held, kept (pending again).
    pub requeued: u64,
    /// Winners only Redis held who no longer fit the stock after a regression.
    pub dropped: u64,
    /// Positions handed out whose winner nobody holds: kept spent (placeholders).
    pub lost: u64,
}

impl Reconciler {
    pub fn new(gate: Gate, db: PgPool, settings: &Settings) -> Self {
        Self {
            gate,
            db,
            kafka: settings.kafka.clone(),
            prefix: settings.redis.key_prefix.clone(),
            settle: settings.claim_window() + settings.issuer.send_timeout() + SETTLE_MARGIN,
            hold_on_server_change: settings.redis.ack_replicas == 0,
            retention: (settings.redis.retention_secs > 0)
                .then(|| Duration::from_secs(settings.redis.retention_secs)),
            metrics: None,
            books: None,
            absent: Arc::default(),
        }
    }

    /// Counts what it does, and checks the books live, in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.books = Some(Arc::new(Books::new(
            self.gate.clone(),
            self.kafka.clone(),
            metrics.clone(),
        )));
        self.metrics = Some(metrics);
        self
    }

    /// The live books, when checked (see [`Reconciler::with_metrics`]).
    pub fn books(&self) -> Option<Arc<Books>> {
        self.books.clone()
    }

    /// Holds what needs it before the service serves, so no application meets an empty queue.
    pub async fn hold_before_serving(&self) -> anyhow::Result<Vec<Coupon>> {
        Ok(self.look().await?.into_iter().map(|h| h.coupon).collect())
    }

    /// Hold, settle, restore, once (the command line). `deadline` bounds the wait for the
    /// consumer group.
    pub async fn run(&self, deadline: Option<Instant>) -> anyhow::Result<Vec<Restored>> {
        let held = self.look().await?;
        self.settle_and_restore(&held, deadline).await
    }

    /// Watches Redis until `shutdown` (what the service runs): holds a coupon within
    /// [`WATCH_EVERY`] of its loss and restores it in the background.
    pub async fn watch(self, shutdown: CancellationToken) {
        let mut restoring: HashSet<CouponId> = HashSet::new();
        let mut tasks: JoinSet<Vec<CouponId>> = JoinSet::new();
        let mut every = tokio::time::interval(WATCH_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            while let Some(done) = tasks.try_join_next() {
                for id in done.unwrap_or_default() {
                    restoring.remove(&id);
                }
            }
            // Bounded: a look stuck on a stalled PostgreSQL or Redis must not stop the next
            // ones (and latches it stops confirming stand aside meanwhile, see gate::latch).
            let held = match tokio::time::timeout(LOOK_TIMEOUT, self.look()).await {
                Ok(Ok(held)) => held,
                Ok(Err(e)) => {
                    tracing::debug!(error = ?e, "could not look at Redis; trying again");
                    continue;
                }
                Err(_) => {
                    tracing::warn!(
                        "a look at Redis and PostgreSQL took over {LOOK_TIMEOUT:?}; trying again"
                    );
                    continue;
                }
            };
            let fresh: Vec<Held> = held
                .into_iter()
                .filter(|h| restoring.insert(h.coupon.id))
                .collect();
            if fresh.is_empty() {
                continue;
            }
            let this = self.clone();
            tasks.spawn(async move {
                let ids = fresh.iter().map(|h| h.coupon.id).collect();
                if let Err(e) = this.settle_and_restore(&fresh, None).await {
                    // Still held (the restore did not run, or did not lift it): the next look
                    // picks it up again. Lifted but not enlisted: the next look enlists it.
                    tracing::warn!(error = ?e, "restoring failed; trying again");
                }
                ids
            });
        }
    }
}
