//! Where the consumer group stands on the issue topic: what it committed against what the
//! partitions hold. Reconciliation waits on it; tests assert on it.

use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::configuration::KafkaSettings;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Per partition of `topic`: the group's committed offset (0 when none) and the high watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffsets {
    pub committed: Vec<i64>,
    pub high: Vec<i64>,
}

impl GroupOffsets {
    /// Messages on the topic the group has not committed past.
    pub fn behind(&self) -> i64 {
        self.committed
            .iter()
            .zip(&self.high)
            .map(|(c, h)| (h - c).max(0))
            .sum()
    }

    /// True when the group committed past everything `earlier` saw on the topic.
    pub fn caught_up_with(&self, earlier: &GroupOffsets) -> bool {
        earlier
            .high
            .iter()
            .enumerate()
            .all(|(p, h)| self.committed.get(p).is_some_and(|c| c >= h))
    }
}

/// Reads `group`'s offsets on `topic` (blocking client calls, run off the async threads).
pub async fn group_offsets(
    settings: &KafkaSettings,
    topic: &str,
    group: &str,
) -> anyhow::Result<GroupOffsets> {
    let mut config = settings.client_config();
    config.set("group.id", group);
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create().context("creating a Kafka client")?;
        let metadata = consumer
            .fetch_metadata(Some(&topic), TIMEOUT)
            .context("reading topic metadata")?;
        let partitions = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len() as i32);
        let mut list = TopicPartitionList::new();
        let mut high = Vec::new();
        for p in 0..partitions {
            list.add_partition(&topic, p);
            high.push(consumer.fetch_watermarks(&topic, p, TIMEOUT)?.1);
        }
        let committed = consumer
            .committed_offsets(list, TIMEOUT)
            .context("reading committed offsets")?
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .collect();
        Ok(GroupOffsets { committed, high })
    })
    .await
    .context("the offsets task panicked")?
}
