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
//!   admissions, so a promoted replica holds everything published.
//!
//! Such a coupon is restored in three steps, each safe to repeat and to run from every instance
//! at once:
//!
//! 1. hold: applications and position reads answer 503 (never 404), the issuer claims nothing;
//! 2. settle: wait out the producer's send timeout, so every send that could have been in
//!    flight when the state was lost has landed or failed; then wait until the consumer group
//!    has committed everything on the issue topic, so every published winner is persisted;
//! 3. restore: one script rebuilds the line from the persisted winners and what Redis still
//!    holds (see restore.lua) and lifts the hold. The first instance to get there does it.
//!
//! What this cannot bring back: winners admitted but not yet published when Redis lost its
//! memory, unless `APP_REDIS__ACK_REPLICAS` made their 202 wait for a replica. Their positions
//! stay spent (placeholders), so nobody else is told their place.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use serde::Serialize;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::configuration::{KafkaSettings, Settings};
use crate::domain::{Coupon, CouponId};
use crate::gate::{Gate, HoldReason, Standing};
use crate::kafka::{self, GroupOffsets};
use crate::metrics::{HoldCause, HoldLabel, Metrics};
use crate::store::{self, Watched};

/// How often every instance looks at Redis: detection takes at most this plus one look.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(250);
/// Added to the send timeout: a delivery report on its way, a clock tick.
const SETTLE_MARGIN: Duration = Duration::from_millis(500);
/// How often a wait that goes on is reported in the log.
const REPORT_EVERY: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Reconciler {
    gate: Gate,
    db: PgPool,
    kafka: KafkaSettings,
    /// The longest a send started before the hold can take to land or fail.
    send_timeout: Duration,
    /// Hold every coupon when the Redis server changes (see the module documentation).
    hold_on_server_change: bool,
    /// `APP_REDIS__RETENTION_SECS`; `None` keeps finished events in Redis.
    retention: Option<Duration>,
    /// Counts holds and restores, when this runs inside the service.
    metrics: Option<Arc<Metrics>>,
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
}

impl Reconciler {
    pub fn new(gate: Gate, db: PgPool, settings: &Settings) -> Self {
        Self {
            gate,
            db,
            kafka: settings.kafka.clone(),
            send_timeout: settings.issuer.send_timeout(),
            hold_on_server_change: settings.redis.ack_replicas == 0,
            retention: (settings.redis.retention_secs > 0)
                .then(|| Duration::from_secs(settings.redis.retention_secs)),
            metrics: None,
        }
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Holds every coupon PostgreSQL has and Redis lacks or regressed (and every coupon when
    /// `server_changed`); returns the coupons held now, by this look or an earlier one.
    async fn hold_lost(&self, last_server: &mut Option<String>) -> anyhow::Result<Vec<Coupon>> {
        // PostgreSQL first: Redis' count can only grow after it, so a regression seen is real.
        let (retired, coupons): (Vec<Watched>, Vec<Watched>) = store::watched_coupons(&self.db)
            .await?
            .into_iter()
            .partition(|w| w.retired_at.is_some());
        self.gate.note_retired(retired.iter().map(|w| w.coupon.id));
        // A retired event's losers keep coming while its keys last, and the sold-out latch
        // keeps answering them; once the keys are gone PostgreSQL answers, and the latch (its
        // winners' ids) is let go.
        if let Some(retention) = self.retention {
            let gone = Utc::now() - chrono::Duration::from_std(retention).unwrap_or_default();
            for w in retired
                .iter()
                .filter(|w| w.retired_at.is_some_and(|at| at <= gone))
            {
                self.gate.unlatch(w.coupon.id);
            }
        }
        let ids: Vec<CouponId> = coupons.iter().map(|w| w.coupon.id).collect();
        self.gate.remember(ids.iter().copied());
        let survey = self.gate.survey(&ids).await?;
        let server_changed = last_server
            .replace(survey.server.clone())
            .is_some_and(|before| before != survey.server);
        if server_changed {
            tracing::warn!(server = %survey.server, "the Redis server changed (restart or failover)");
        }
        let mut held = Vec::new();
        for (watched, standing) in coupons.into_iter().zip(survey.coupons) {
            let last_position = watched.last_position;
            let reason = if !standing.present {
                Some(HoldReason::Missing)
            } else if standing.admitted < u64::from(last_position) {
                Some(HoldReason::Regressed)
            } else if server_changed && self.hold_on_server_change {
                Some(HoldReason::ServerChanged)
            } else {
                None
            };
            let coupon = watched.coupon.clone();
            let full = standing.admitted >= u64::from(coupon.stock.get());
            if standing.held || !standing.present || !full || reason.is_some() {
                self.gate.unlatch(coupon.id);
            }
            if standing.held {
                held.push(coupon);
            } else if reason.is_none() {
                self.retire_if_done(&watched, &standing).await?;
            } else if let Some(reason) = reason {
                if self.gate.hold(coupon.id, reason).await? {
                    if let Some(metrics) = &self.metrics {
                        let reason = match reason {
                            HoldReason::Missing => HoldCause::missing,
                            HoldReason::Regressed => HoldCause::regressed,
                            HoldReason::ServerChanged => HoldCause::server_changed,
                        };
                        metrics
                            .coupons_held
                            .get_or_create(&HoldLabel { reason })
                            .inc();
                    }
                    tracing::warn!(coupon_id = %coupon.id, ?reason, admitted = standing.admitted, last_position, "holding the coupon until it is restored from PostgreSQL");
                    held.push(coupon);
                }
            }
        }
        Ok(held)
    }

    /// Retires the Redis copy of an event that is finished (sold out or closed) with every
    /// winner persisted and nothing in the pipeline: its keys expire after the retention, and
    /// PostgreSQL answers its reads from then on (see `store::archived`).
    async fn retire_if_done(&self, watched: &Watched, standing: &Standing) -> anyhow::Result<()> {
        let Some(retention) = self.retention else {
            return Ok(());
        };
        let coupon = &watched.coupon;
        let finished = standing.admitted >= u64::from(coupon.stock.get())
            || coupon.window.closes_at().is_some_and(|c| c <= Utc::now());
        let persisted = u64::from(watched.issued_count) == standing.admitted;
        if !(finished && persisted && standing.pending == 0 && standing.inflight == 0) {
            return Ok(());
        }
        // This instance's last second of answers goes in before the count is kept; another
        // instance's may still be on its way (at most a second of it is missed).
        self.gate.flush_counts().await;
        if let Some(applications) = self.gate.expire(coupon.id, retention).await? {
            store::mark_retired(&self.db, coupon.id, applications).await?;
            tracing::info!(coupon_id = %coupon.id, retention_secs = retention.as_secs(), "finished and persisted: its Redis keys expire, reads come from PostgreSQL");
        }
        Ok(())
    }

    /// Holds what needs it before the service serves, so no application meets an empty queue.
    pub async fn hold_before_serving(&self) -> anyhow::Result<Vec<Coupon>> {
        self.hold_lost(&mut None).await
    }

    /// Hold, settle, restore, once (the command line). `deadline` bounds the wait for the
    /// consumer group.
    pub async fn run(&self, deadline: Option<Instant>) -> anyhow::Result<Vec<Restored>> {
        let held = self.hold_lost(&mut None).await?;
        self.settle_and_restore(&held, deadline).await
    }

    /// Watches Redis until `shutdown` (what the service runs): holds a coupon within
    /// [`WATCH_EVERY`] of its loss and restores it in the background.
    pub async fn watch(self, shutdown: CancellationToken) {
        let mut last_server = None;
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
            let held = match self.hold_lost(&mut last_server).await {
                Ok(held) => held,
                Err(e) => {
                    tracing::debug!(error = ?e, "could not look at Redis; trying again");
                    continue;
                }
            };
            let fresh: Vec<Coupon> = held
                .into_iter()
                .filter(|c| restoring.insert(c.id))
                .collect();
            if fresh.is_empty() {
                continue;
            }
            let this = self.clone();
            tasks.spawn(async move {
                let ids = fresh.iter().map(|c| c.id).collect();
                if let Err(e) = this.settle_and_restore(&fresh, None).await {
                    // Still held: the next look picks it up again.
                    tracing::warn!(error = ?e, "restoring failed; trying again");
                }
                ids
            });
        }
    }

    async fn settle_and_restore(
        &self,
        held: &[Coupon],
        deadline: Option<Instant>,
    ) -> anyhow::Result<Vec<Restored>> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        tokio::time::sleep(self.send_timeout + SETTLE_MARGIN).await;
        self.wait_drained(deadline).await?;
        let mut restored = Vec::new();
        for coupon in held {
            let (winners, _) = store::persisted_winners(&self.db, coupon.id).await?;
            if let Some(r) = self.gate.restore(coupon, &winners).await? {
                if let Some(metrics) = &self.metrics {
                    metrics.coupons_restored.inc();
                }
                tracing::info!(coupon_id = %coupon.id, winners = r.persisted, requeued = r.requeued, dropped = r.dropped, took_ms = started.elapsed().as_millis() as u64, "restored from PostgreSQL");
                if r.dropped > 0 {
                    tracing::error!(coupon_id = %coupon.id, dropped = r.dropped, "admissions Redis lost with its replication did not fit the stock after the restore; set APP_REDIS__ACK_REPLICAS to prevent this");
                }
                restored.push(Restored {
                    coupon_id: coupon.id.get(),
                    winners: r.persisted,
                    requeued: r.requeued,
                    dropped: r.dropped,
                });
            }
        }
        Ok(restored)
    }

    /// Waits until the consumer group has committed past everything on the topic now.
    async fn wait_drained(&self, deadline: Option<Instant>) -> anyhow::Result<()> {
        let (topic, group) = (&self.kafka.topic, &self.kafka.group_id);
        let target = kafka::group_offsets(&self.kafka, topic, group)
            .await
            .context("reading the issue topic's offsets")?;
        let mut reported = Instant::now();
        loop {
            let now: GroupOffsets = kafka::group_offsets(&self.kafka, topic, group).await?;
            if now.caught_up_with(&target) {
                return Ok(());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                anyhow::bail!(
                    "{} published winners are not persisted yet: is the consumer running?",
                    now.behind()
                );
            }
            if reported.elapsed() >= REPORT_EVERY {
                tracing::warn!(
                    behind = now.behind(),
                    "waiting for the consumer to persist published winners before restoring"
                );
                reported = Instant::now();
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
