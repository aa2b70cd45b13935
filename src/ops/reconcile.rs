//! Recovery from Redis data loss. PostgreSQL is the durable record of who won; when Redis no
//! longer holds a coupon it knew (a restart without persistence, a flush, deleted keys), its
//! state is rebuilt from the persisted winners:
//!
//! 1. hold: applications for the coupon answer 503 instead of admitting into an empty queue;
//! 2. drain: wait until the consumer group has committed everything on the issue topic, so
//!    winners already published (on Kafka, not yet in PostgreSQL) are persisted first and keep
//!    their positions;
//! 3. restore: one script rewrites meta, queue (persisted positions and scores), ISSUED
//!    statuses, the issued counter and the score watermark, and lifts the hold.
//!
//! What this cannot bring back: winners admitted but not yet published when Redis lost its
//! memory (at most one issuer period's worth). Their positions stay spent (see restore.lua);
//! Redis with AOF (`appendfsync everysec`) narrows the window to about one second of writes.

use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use sqlx::PgPool;
use tokio::time::Instant;

use crate::configuration::KafkaSettings;
use crate::domain::Coupon;
use crate::gate::Gate;
use crate::kafka::{self, GroupOffsets};
use crate::store;

const POLL: Duration = Duration::from_millis(500);
/// How often a wait that goes on is reported in the log.
const REPORT_EVERY: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Reconciler {
    gate: Gate,
    db: PgPool,
    kafka: KafkaSettings,
}

/// One coupon brought back.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Restored {
    pub coupon_id: i64,
    /// Persisted winners written back as ISSUED.
    pub winners: u64,
}

impl Reconciler {
    pub fn new(gate: Gate, db: PgPool, kafka: KafkaSettings) -> Self {
        Self { gate, db, kafka }
    }

    /// Holds every coupon PostgreSQL has and Redis lacks; returns them.
    pub async fn hold_missing(&self) -> anyhow::Result<Vec<Coupon>> {
        let coupons = store::all_coupons(&self.db).await?;
        let ids: Vec<_> = coupons.iter().map(|c| c.id).collect();
        let missing = self.gate.missing(&ids).await?;
        let mut held = Vec::new();
        for coupon in coupons.into_iter().filter(|c| missing.contains(&c.id)) {
            if self.gate.hold(coupon.id).await? {
                tracing::warn!(coupon_id = %coupon.id, "Redis lost this coupon's state; holding it until it is restored");
                held.push(coupon);
            }
        }
        Ok(held)
    }

    /// Hold, drain, restore. `deadline` bounds the drain (the command line); without one it
    /// waits as long as it takes (the service at start), reporting now and then.
    pub async fn run(&self, deadline: Option<Instant>) -> anyhow::Result<Vec<Restored>> {
        let held = self.hold_missing().await?;
        if held.is_empty() {
            return Ok(Vec::new());
        }
        self.wait_drained(deadline).await?;
        let mut restored = Vec::new();
        for coupon in &held {
            let (winners, _) = store::persisted_winners(&self.db, coupon.id).await?;
            if let Some(count) = self.gate.restore(coupon, &winners).await? {
                tracing::info!(coupon_id = %coupon.id, winners = count, "restored from PostgreSQL");
                restored.push(Restored {
                    coupon_id: coupon.id.get(),
                    winners: count,
                });
            }
        }
        Ok(restored)
    }

    /// Like [`run`](Self::run) without a deadline, retrying through outages, until done or
    /// `shutdown`. What the service runs at start.
    pub async fn run_until_done(&self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            let attempt = tokio::select! {
                outcome = self.run(None) => outcome,
                _ = shutdown.cancelled() => return,
            };
            match attempt {
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = ?e, "reconciliation failed; trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(REPORT_EVERY) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
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
