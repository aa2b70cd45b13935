//! The batch issuer: on every tick of `APP_ISSUER__SCHEDULE` (every second by default), on every
//! instance, moves pending winners onto Kafka.
//!
//! A tick walks the registered coupons; for each it claims a batch (pending → inflight with a
//! lease), publishes it, waits for the delivery reports, then marks the delivered winners
//! PUBLISHED and hands failed ones back to pending. It repeats until nothing is pending, so a
//! tick drains a whole spike. Instances share the work through the atomic claim.

mod schedule;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::configuration::IssuerSettings;
use crate::domain::{CouponId, Status, UserId};
use crate::gate::Gate;
use crate::kafka::Publisher;
use crate::metrics::{CouponLabel, Metrics};

/// What one tick did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TickReport {
    pub published: usize,
    pub failed: usize,
}

#[derive(Clone)]
pub struct Issuer {
    gate: Gate,
    publisher: Publisher,
    settings: IssuerSettings,
    /// A claim older than this when its send would start is abandoned (see
    /// `Settings::claim_window`).
    claim_window: Duration,
    metrics: Arc<Metrics>,
    /// Held for the whole of a tick: ticks of one instance never overlap, and shutdown waits on
    /// it to let the running tick finish.
    tick: Arc<Mutex<()>>,
}

impl Issuer {
    pub fn new(
        gate: Gate,
        publisher: Publisher,
        settings: IssuerSettings,
        claim_window: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            gate,
            publisher,
            settings,
            claim_window,
            metrics,
            tick: Arc::default(),
        }
    }

    /// One tick, waiting for a running one to finish first.
    pub async fn run_once(&self) -> anyhow::Result<TickReport> {
        let _running = self.tick.lock().await;
        self.tick_locked().await
    }

    /// The publisher, to raise a fatal error from a test.
    #[doc(hidden)]
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// A producer that failed for good cannot publish again: nothing is claimed for it (so no
    /// winner waits out a lease), and the scheduled issuer stops the process.
    fn check_producer(&self) -> anyhow::Result<()> {
        match self.publisher.fatal_error() {
            Some(fatal) => anyhow::bail!(
                "the Kafka producer failed for good ({fatal}); the process must restart"
            ),
            None => Ok(()),
        }
    }

    async fn tick_locked(&self) -> anyhow::Result<TickReport> {
        self.metrics.issuer_ticks.inc();
        self.check_producer()?;
        let started = Instant::now();
        let mut report = TickReport::default();
        for coupon in self.gate.active_coupons().await? {
            // One coupon's trouble must not hold up the others.
            match self.drain(coupon).await {
                Ok(r) => {
                    report.published += r.published;
                    report.failed += r.failed;
                }
                Err(e) => tracing::warn!(error = ?e, %coupon, "issuing failed; retrying next tick"),
            }
            if let Ok(backlog) = self.gate.backlog(coupon).await {
                let label = CouponLabel {
                    coupon: coupon.get(),
                };
                self.metrics
                    .pending
                    .get_or_create(&label)
                    .set(backlog.pending as i64);
                self.metrics
                    .inflight
                    .get_or_create(&label)
                    .set(backlog.inflight as i64);
            }
        }
        self.check_producer()?;
        if report.published + report.failed > 0 {
            tracing::info!(
                published = report.published,
                failed = report.failed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "issuer tick"
            );
        }
        Ok(report)
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn drain(&self, coupon: CouponId) -> anyhow::Result<TickReport> {
        let mut report = TickReport::default();
        loop {
            let claiming = Instant::now();
            let claim = self
                .gate
                .claim(coupon, self.settings.batch_size, self.settings.lease())
                .await?;
            if claiming.elapsed() > self.claim_window && !claim.winners.is_empty() {
                // A restore that began meanwhile waits only so long for sends claimed before
                // it: sending now could land after it read PostgreSQL. The lease hands the
                // winners back.
                tracing::warn!(%coupon, took_ms = claiming.elapsed().as_millis() as u64, "claim took too long; not sending it");
                return Ok(report);
            }
            if claim.winners.is_empty() {
                if claim.finished {
                    self.gate.retire(coupon).await?;
                }
                return Ok(report);
            }
            self.metrics
                .issuer_batch_size
                .observe(claim.winners.len() as f64);
            let sending = Instant::now();
            let results = self.publisher.publish(&claim.winners).await;
            self.metrics
                .publish_seconds
                .observe(sending.elapsed().as_secs_f64());
            let (mut delivered, mut failed): (Vec<UserId>, Vec<UserId>) = (vec![], vec![]);
            for (winner, result) in claim.winners.iter().zip(results) {
                match result {
                    Ok(()) => delivered.push(winner.user),
                    Err(e) => {
                        tracing::warn!(error = %e, %coupon, "send failed; the winner goes back to pending");
                        failed.push(winner.user);
                    }
                }
            }
            self.gate
                .advance(coupon, Status::Published, &delivered)
                .await?;
            report.published += delivered.len();
            self.metrics.published.inc_by(delivered.len() as u64);
            self.metrics.publish_failures.inc_by(failed.len() as u64);
            if !failed.is_empty() {
                self.metrics
                    .dependency_error(crate::metrics::Dependency::kafka);
                self.gate.release(coupon, &failed).await?;
                report.failed += failed.len();
                // The broker is struggling: leave the rest for the next tick.
                return Ok(report);
            }
        }
    }

    /// Waits for a running tick to finish, then for every enqueued message to be delivered.
    pub async fn finish(&self, flush_timeout: Duration) {
        let _running = self.tick.lock().await;
        self.publisher.flush(flush_timeout);
    }
}
