use std::time::Duration;

use fcfs_coupon::configuration::Settings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(10);

/// The sum over the topic's partitions of what `group` has committed.
pub async fn committed_total(settings: &Settings, group: &str) -> i64 {
    let (brokers, topic, partitions) = (
        settings.kafka.brokers.clone(),
        settings.kafka.topic.clone(),
        settings.kafka.partitions,
    );
    let group = group.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, p);
        }
        let committed = consumer.committed_offsets(tpl, TIMEOUT).unwrap();
        committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum()
    })
    .await
    .unwrap()
}

/// How many messages `topic` holds over all its partitions (0 for a topic that does not
/// exist yet).
pub async fn topic_messages(settings: &Settings, topic: &str) -> i64 {
    let brokers = settings.kafka.brokers.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        let metadata = consumer.fetch_metadata(Some(&topic), TIMEOUT).unwrap();
        let partitions = metadata
            .topics()
            .first()
            .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
            .unwrap_or_default();
        partitions
            .into_iter()
            .map(|p| {
                let (low, high) = consumer.fetch_watermarks(&topic, p, TIMEOUT).unwrap();
                high - low
            })
            .sum()
    })
    .await
    .unwrap()
}

/// Puts raw bytes on the service's issue topic, bypassing the issuer.
pub async fn produce_raw(settings: &Settings, key: &str, payload: &[u8]) {
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &settings.kafka.brokers)
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(&settings.kafka.topic)
                .key(key)
                .payload(payload),
            TIMEOUT,
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}
