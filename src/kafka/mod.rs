//! Kafka: the hand-off between the admission gate and the database.

mod message;
mod offsets;
mod producer;
mod topics;

pub use message::IssueRequest;
pub use offsets::{group_offsets, GroupOffsets};
pub use producer::Publisher;
pub use topics::ensure_topics;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;

use crate::configuration::KafkaSettings;

impl KafkaSettings {
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config
    }
}

/// Answers "is the broker reachable?" for the readiness check.
#[derive(Clone)]
pub struct BrokerProbe {
    client: Arc<AdminClient<DefaultClientContext>>,
}

impl BrokerProbe {
    pub fn new(settings: &KafkaSettings) -> anyhow::Result<Self> {
        let client = settings
            .client_config()
            .create()
            .context("creating the Kafka admin client")?;
        Ok(Self {
            client: Arc::new(client),
        })
    }

    pub async fn ping(&self, timeout: Duration) -> anyhow::Result<()> {
        let client = self.client.clone();
        // librdkafka's metadata call blocks its thread.
        tokio::task::spawn_blocking(move || client.inner().fetch_metadata(None, timeout))
            .await
            .context("metadata task panicked")?
            .context("fetching broker metadata")?;
        Ok(())
    }
}
