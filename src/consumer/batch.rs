use std::collections::BTreeMap;
use std::num::NonZeroU32;

use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::retry::{never, retrying, Gave};
use super::IssueConsumer;
use crate::domain::{CouponId, Status, UserId, Winner};
use crate::gate::GateError;
use crate::kafka::IssueRequest;
use crate::metrics::Dependency;
use crate::store::{self, FailedEvent};

/// A message that can never be persisted, with the reason.
struct Poison<'a> {
    message: &'a OwnedMessage,
    request: Option<IssueRequest>,
    error: String,
}

impl IssueConsumer {
    /// Persists a batch, then marks its winners ISSUED, then commits its offsets. Returns early,
    /// committing nothing, only when shutdown interrupts a retry.
    #[tracing::instrument(level = "debug", skip_all, fields(messages = batch.len()))]
    pub(super) async fn process(&self, batch: &[OwnedMessage], shutdown: &CancellationToken) {
        let mut valid: Vec<(&OwnedMessage, IssueRequest)> = Vec::new();
        let mut poison: Vec<Poison> = Vec::new();
        for message in batch {
            match IssueRequest::decode(message.payload()) {
                Ok(request) => valid.push((message, request)),
                Err(error) => poison.push(Poison {
                    message,
                    request: None,
                    error,
                }),
            }
        }
        if let Some(limiter) = &self.limiter {
            if let Some(n) = NonZeroU32::new(valid.len() as u32) {
                limiter.until_n_ready(n).await.ok();
            }
        }
        let Ok(persisted) = self.persist(&valid, &mut poison, shutdown).await else {
            return;
        };
        if self
            .mark(Status::Issued, &persisted, shutdown)
            .await
            .is_err()
        {
            return;
        }
        for p in &poison {
            if self.bury(p, shutdown).await.is_err() {
                return;
            }
        }
        self.commit(batch);
        self.metrics.consumer_batch_size.observe(batch.len() as f64);
        self.metrics.failed_events.inc_by(poison.len() as u64);
        tracing::debug!(
            persisted = persisted.len(),
            poison = poison.len(),
            "batch committed"
        );
    }

    /// The whole batch in one transaction; when a row breaks a constraint, each row on its own
    /// so only the offending ones are set aside.
    async fn persist<'a>(
        &self,
        valid: &[(&'a OwnedMessage, IssueRequest)],
        poison: &mut Vec<Poison<'a>>,
        shutdown: &CancellationToken,
    ) -> Result<Vec<Winner>, Gave> {
        let issues: Vec<Winner> = valid.iter().map(|(_, r)| r.winner()).collect();
        if issues.is_empty() {
            return Ok(issues);
        }
        let whole = retrying(
            "persisting a batch",
            self.failed(Dependency::postgres),
            shutdown,
            store::is_permanent,
            || store::persist_batch(&self.db, &issues),
        )
        .await;
        match whole {
            Ok(inserted) => {
                self.counted(issues.len(), inserted);
                return Ok(issues);
            }
            Err(Gave::Stopped) => return Err(Gave::Stopped),
            Err(Gave::Up(e)) => tracing::warn!(error = ?e, "batch refused; persisting row by row"),
        }
        let mut persisted = Vec::with_capacity(issues.len());
        for ((message, request), issue) in valid.iter().zip(issues) {
            let one = retrying(
                "persisting a row",
                self.failed(Dependency::postgres),
                shutdown,
                store::is_permanent,
                || store::persist_batch(&self.db, std::slice::from_ref(&issue)),
            )
            .await;
            match one {
                Ok(inserted) => {
                    self.counted(1, inserted);
                    persisted.push(issue);
                }
                Err(Gave::Stopped) => return Err(Gave::Stopped),
                Err(Gave::Up(e)) => poison.push(Poison {
                    message,
                    request: Some(request.clone()),
                    error: format!("{e:#}"),
                }),
            }
        }
        Ok(persisted)
    }

    async fn mark(
        &self,
        to: Status,
        issues: &[Winner],
        shutdown: &CancellationToken,
    ) -> Result<(), Gave> {
        let mut by_coupon: BTreeMap<CouponId, Vec<UserId>> = BTreeMap::new();
        for issue in issues {
            by_coupon.entry(issue.coupon).or_default().push(issue.user);
        }
        for (coupon, users) in by_coupon {
            retrying(
                "updating status in Redis",
                || {},
                shutdown,
                never::<GateError>,
                || self.gate.advance(coupon, to, &users),
            )
            .await?;
        }
        Ok(())
    }

    /// A `failed_event` row and a dead-letter message, then FAILED for the user when known.
    async fn bury(&self, poison: &Poison<'_>, shutdown: &CancellationToken) -> Result<(), Gave> {
        let m = poison.message;
        tracing::error!(
            topic = m.topic(), partition = m.partition(), offset = m.offset(), error = %poison.error,
            "message can never be persisted; recorded in failed_event and the dead-letter topic"
        );
        let event = FailedEvent {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
            payload: m.payload(),
            error: &poison.error,
        };
        retrying(
            "recording a failed event",
            self.failed(Dependency::postgres),
            shutdown,
            never,
            || store::record_failed(&self.db, &event),
        )
        .await?;
        let letter = [(
            String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
            m.payload().unwrap_or_default().to_vec(),
        )];
        retrying(
            "sending to the dead-letter topic",
            self.failed(Dependency::kafka),
            shutdown,
            never,
            || async {
                self.publisher
                    .send_all(&self.dead_letter_topic, &letter)
                    .await
                    .remove(0)
            },
        )
        .await?;
        if let Some(issue) = poison.request.as_ref().map(IssueRequest::winner) {
            self.mark(Status::Failed, &[issue], shutdown).await?;
        }
        Ok(())
    }

    /// Stores the next offset of every partition in the batch and commits them.
    fn commit(&self, batch: &[OwnedMessage]) {
        let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for m in batch {
            let offset = next.entry((m.topic(), m.partition())).or_default();
            *offset = (*offset).max(m.offset() + 1);
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            if let Err(e) = offsets.add_partition_offset(topic, partition, Offset::Offset(offset)) {
                tracing::warn!(error = %e, "cannot record an offset");
            }
        }
        // A failed commit (say, a rebalance took the partition) only means redelivery.
        if let Err(e) = self
            .consumer
            .store_offsets(&offsets)
            .and_then(|()| self.consumer.commit_consumer_state(CommitMode::Async))
        {
            tracing::warn!(error = %e, "offset commit failed; the batch will be redelivered");
        }
    }
}

impl IssueConsumer {
    /// Counts rows written and messages whose row was already there. Redelivery is expected
    /// after a crash or a rebalance; logged, because its size tells how much work was redone.
    fn counted(&self, messages: usize, inserted: u64) {
        self.metrics.rows_persisted.inc_by(inserted);
        let redelivered = (messages as u64).saturating_sub(inserted);
        if redelivered > 0 {
            self.metrics.redelivered.inc_by(redelivered);
            tracing::info!(
                redelivered,
                "messages already persisted; nothing written for them"
            );
        }
    }

    /// Counts a failed call; Redis failures are counted by the gate itself.
    fn failed(&self, dependency: Dependency) -> impl Fn() + '_ {
        move || self.metrics.dependency_error(dependency)
    }
}
