//! Steps 2 and 3 of a restore (see the module documentation): settle, then rebuild.

use anyhow::Context;
use tokio::time::Instant;

use super::look::Held;
use super::{Reconciler, Restored};
use crate::kafka::{self, GroupOffsets};
use crate::store;

const POLL: std::time::Duration = std::time::Duration::from_millis(250);
/// How often a wait that goes on is reported in the log.
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

impl Reconciler {
    pub(super) async fn settle_and_restore(
        &self,
        held: &[Held],
        deadline: Option<Instant>,
    ) -> anyhow::Result<Vec<Restored>> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        // Counted from now, after every hold in `held` was placed.
        tokio::time::sleep(self.settle).await;
        self.wait_drained(deadline).await?;
        let mut restored = Vec::new();
        for Held { coupon, hold } in held {
            // Deleted (a rehearsal) while held: nothing to restore, and its keys must not stay
            // held for ever.
            if store::find_coupon(&self.db, coupon.id).await?.is_none() {
                self.gate.delete_keys_of_deleted(coupon.id).await?;
                tracing::info!(coupon_id = %coupon.id, "held, then deleted: its keys are gone");
                continue;
            }
            let (winners, _) = store::persisted_winners(&self.db, coupon.id).await?;
            // Read after the drain: every position the gate was seen to hand out stays taken.
            let spent = store::admitted_high(&self.db, coupon.id).await?;
            let Some(r) = self.gate.restore(coupon, hold, spent, &winners).await? else {
                continue;
            };
            if let Some(metrics) = &self.metrics {
                metrics.coupons_restored.inc();
            }
            tracing::info!(coupon_id = %coupon.id, %hold, winners = r.persisted, requeued = r.requeued, dropped = r.dropped, lost = r.lost, took_ms = started.elapsed().as_millis() as u64, "restored from PostgreSQL");
            if r.dropped > 0 || r.lost > 0 {
                tracing::error!(coupon_id = %coupon.id, dropped = r.dropped, lost = r.lost, "admissions Redis lost before they were published or replicated: their places stay spent; set APP_REDIS__ACK_REPLICAS to prevent this");
            }
            restored.push(Restored {
                coupon_id: coupon.id.get(),
                winners: r.persisted,
                requeued: r.requeued,
                dropped: r.dropped,
                lost: r.lost,
            });
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
