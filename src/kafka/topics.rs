use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::configuration::KafkaSettings;

/// Creates the issue topic and its dead-letter topic when they do not exist yet.
pub async fn ensure_topics(settings: &KafkaSettings) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = settings
        .client_config()
        .create()
        .context("creating the Kafka admin client")?;
    let dlq = settings.dead_letter_topic();
    let replication = || TopicReplication::Fixed(settings.replication_factor);
    let min_insync = settings.min_insync_replicas.map(|n| n.to_string());
    let mut topics = [
        NewTopic::new(&settings.topic, settings.partitions, replication()),
        NewTopic::new(&dlq, 1, replication()),
    ];
    if let Some(n) = &min_insync {
        topics = topics.map(|topic| topic.set("min.insync.replicas", n));
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&topics, &options)
        .await
        .context("creating Kafka topics")?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(%topic, "created Kafka topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating Kafka topic {topic}: {code}"),
        }
    }
    Ok(())
}
