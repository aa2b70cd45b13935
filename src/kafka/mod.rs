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

/// Properties the service sets itself because its guarantees rest on them (see DESIGN:
/// idempotent `acks=all` producer, offsets stored only after the rows are committed).
const OWN_PROPERTIES: [&str; 4] = [
    "enable.idempotence",
    "acks",
    "enable.auto.offset.store",
    "bootstrap.servers",
];

impl KafkaSettings {
    /// `APP_KAFKA__PROPERTIES__…`, named as librdkafka names them.
    fn passed_through(&self) -> impl Iterator<Item = (String, &String)> {
        self.properties
            .iter()
            .map(|(name, value)| (name.replace('_', "."), value))
    }

    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (name, value) in self.passed_through() {
            config.set(name, value);
        }
        config.set("bootstrap.servers", &self.brokers);
        config
    }

    /// Refuses, by name, a property librdkafka does not know or one the service must set
    /// itself; called at start, before any client is made.
    pub fn check_properties(&self) -> anyhow::Result<()> {
        for (name, _) in self.passed_through() {
            if OWN_PROPERTIES.contains(&name.as_str()) {
                anyhow::bail!(
                    "APP_KAFKA__PROPERTIES: {name} is set by the service (its delivery guarantees depend on it)"
                );
            }
        }
        let probe: Result<rdkafka::consumer::BaseConsumer, _> = self.client_config().create();
        probe
            .map(drop)
            .map_err(|e| anyhow::anyhow!("APP_KAFKA__PROPERTIES: librdkafka refused them: {e}"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_reach_every_client_by_librdkafka_name() {
        let mut settings = KafkaSettings::default();
        settings
            .properties
            .insert("socket_timeout_ms".into(), "1234".into());
        let config = settings.client_config();
        assert_eq!(config.get("socket.timeout.ms"), Some("1234"));
        assert_eq!(config.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        assert!(settings.check_properties().is_ok());
        settings.properties.insert("acks".into(), "1".into());
        assert!(settings.check_properties().is_err());
    }

    #[test]
    fn librdkafka_is_built_with_tls() {
        let mut settings = KafkaSettings::default();
        settings
            .properties
            .insert("security_protocol".into(), "SASL_SSL".into());
        settings
            .properties
            .insert("sasl_mechanism".into(), "SCRAM-SHA-512".into());
        for (name, value) in [("sasl_username", "shop"), ("sasl_password", "secret")] {
            settings.properties.insert(name.into(), value.into());
        }
        settings.check_properties().unwrap();
    }
}
