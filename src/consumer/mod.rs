//! The consumer: reads issue requests in batches and persists each batch in one transaction.
//! Offsets are stored and committed only after the batch's rows are committed, so a crash at
//! any point redelivers, and redelivery is harmless (inserts skip rows already present).

mod batch;
mod close;
mod retry;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use rdkafka::{ClientContext, Statistics, TopicPartitionList};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::configuration::{ConsumerSettings, KafkaSettings};
use crate::gate::Gate;
use crate::kafka::Publisher;
use crate::metrics::{Dependency, Metrics, PartitionLabel};

/// Copies librdkafka's per-partition consumer lag (from its statistics) into the metrics.
pub struct LagContext {
    metrics: Arc<Metrics>,
}

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        for topic in statistics.topics.values() {
            for (&partition, stats) in &topic.partitions {
                // Partition -1 is librdkafka's internal one; lag -1 means not known yet.
                if partition >= 0 && stats.consumer_lag >= 0 {
                    let label = PartitionLabel { partition };
                    self.metrics
                        .consumer_lag
                        .get_or_create(&label)
                        .set(stats.consumer_lag);
                }
            }
        }
    }
}

/// Which partitions this consumer owns is the first question when issuance stalls, so every
/// change is logged.
impl ConsumerContext for LagContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = |list: &TopicPartitionList| -> Vec<i32> {
            list.elements().iter().map(|e| e.partition()).collect()
        };
        match rebalance {
            Rebalance::Assign(list) => {
                tracing::info!(partitions = ?partitions(list), "partitions assigned")
            }
            Rebalance::Revoke(list) => {
                tracing::info!(partitions = ?partitions(list), "partitions revoked")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
        }
    }
}

pub struct IssueConsumer {
    consumer: close::Closing<StreamConsumer<LagContext>>,
    db: PgPool,
    gate: Gate,
    /// Sends undeliverable messages to the dead-letter topic.
    publisher: Publisher,
    dead_letter_topic: String,
    settings: ConsumerSettings,
    metrics: Arc<Metrics>,
    /// `max_rows_per_sec`, when set: the database sees at most that many rows a second.
    limiter: Option<DefaultDirectRateLimiter>,
}

impl IssueConsumer {
    pub fn new(
        kafka: &KafkaSettings,
        settings: ConsumerSettings,
        db: PgPool,
        gate: Gate,
        publisher: Publisher,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let consumer: StreamConsumer<LagContext> = kafka
            .client_config()
            .set("group.id", &kafka.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", "1000")
            .set(
                "session.timeout.ms",
                settings.session_timeout_ms.to_string(),
            )
            .set(
                "max.poll.interval.ms",
                settings.max_poll_interval_ms.to_string(),
            )
            .create_with_context(LagContext {
                metrics: metrics.clone(),
            })
            .context("creating the Kafka consumer")?;
        consumer
            .subscribe(&[&kafka.topic])
            .context("subscribing to the issue topic")?;
        let limiter = settings
            .max_rows_per_sec
            .and_then(NonZeroU32::new)
            .map(|rate| {
                let burst = NonZeroU32::new(settings.batch_size.max(1) as u32)
                    .unwrap_or(rate)
                    .max(rate);
                RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
            });
        Ok(Self {
            consumer: close::Closing::new(consumer),
            db,
            gate,
            publisher,
            dead_letter_topic: kafka.dead_letter_topic(),
            settings,
            metrics,
            limiter,
        })
    }

    /// Consumes until `shutdown`; the batch in hand is finished (or left uncommitted) first.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        while !shutdown.is_cancelled() {
            if let Err(e) = self.run_once(None, &shutdown).await {
                self.metrics.dependency_error(Dependency::kafka);
                tracing::warn!(error = %e, "Kafka receive failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        // Per-batch commits are asynchronous; make sure the last one reached the broker.
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "final offset commit (nothing stored since the last one?)");
        }
        tracing::info!("consumer stopped");
        Ok(())
    }

    /// One batch, start to end: waits for a first message (up to `wait`; without one, until
    /// a message or `shutdown`), gathers the batch, persists it, marks its winners ISSUED and
    /// commits its offsets. Returns how many messages it handled: 0 when none came.
    pub async fn run_once(
        &self,
        wait: Option<Duration>,
        shutdown: &CancellationToken,
    ) -> rdkafka::error::KafkaResult<usize> {
        let batch = tokio::select! {
            _ = shutdown.cancelled() => return Ok(0),
            batch = self.next_batch() => batch?,
            _ = sleep_or_forever(wait) => return Ok(0),
        };
        self.process(&batch, shutdown).await;
        Ok(batch.len())
    }

    /// Up to `batch_size` messages, or whatever arrived `batch_wait_ms` after the first.
    async fn next_batch(&self) -> rdkafka::error::KafkaResult<Vec<OwnedMessage>> {
        let first = self.consumer.recv().await?.detach();
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.settings.batch_wait_ms);
        let mut batch = vec![first];
        while batch.len() < self.settings.batch_size {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(message)) => batch.push(message.detach()),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "Kafka receive failed mid-batch");
                    break;
                }
                Err(_elapsed) => break,
            }
        }
        tracing::debug!(
            messages = batch.len(),
            first_offset = batch[0].offset(),
            "batch"
        );
        Ok(batch)
    }
}

async fn sleep_or_forever(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}
