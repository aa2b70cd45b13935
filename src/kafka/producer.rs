use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use futures::future::join_all;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::IssueRequest;
use crate::configuration::KafkaSettings;
use crate::domain::Winner;

/// Idempotent, acks=all producer. Sends are enqueued together and their delivery reports awaited
/// together: awaiting them one by one costs a broker round trip each.
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    topic: String,
}

impl Publisher {
    /// `send_timeout`: how long one message may take to be delivered before it fails; the
    /// issuer's lease sets it ([`crate::configuration::IssuerSettings::send_timeout`]).
    pub fn new(settings: &KafkaSettings, send_timeout: Duration) -> anyhow::Result<Self> {
        let producer = settings
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", send_timeout.as_millis().to_string())
            .create()
            .context("creating the Kafka producer")?;
        Ok(Self {
            producer,
            topic: settings.topic.clone(),
        })
    }

    /// Publishes one batch of winners; the result for each winner, in order.
    pub async fn publish(&self, winners: &[Winner]) -> Vec<Result<(), KafkaError>> {
        let now = Utc::now();
        let messages: Vec<(String, Vec<u8>)> = winners
            .iter()
            .map(|w| {
                let body = serde_json::to_vec(&IssueRequest::new(w, now))
                    .expect("an IssueRequest always serialises");
                (w.coupon.to_string(), body)
            })
            .collect();
        let topic = self.topic.clone();
        self.send_all(&topic, &messages).await
    }

    /// Enqueues every message, then awaits every delivery report.
    pub async fn send_all(
        &self,
        topic: &str,
        messages: &[(String, Vec<u8>)],
    ) -> Vec<Result<(), KafkaError>> {
        let pending: Vec<_> = messages
            .iter()
            .map(|(key, payload)| {
                self.producer
                    .send_result(FutureRecord::to(topic).key(key).payload(payload))
                    .map_err(|(e, _)| e)
            })
            .collect();
        join_all(pending.into_iter().map(|queued| async move {
            match queued?.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, _))) => Err(e),
                Err(_cancelled) => Err(KafkaError::Canceled),
            }
        }))
        .await
    }

    /// The error that ended this producer for good, if any (an idempotent producer that lost
    /// track of its sequence, a fenced producer): every later send fails, so the process must
    /// restart with a new one.
    pub fn fatal_error(&self) -> Option<String> {
        self.producer
            .client()
            .fatal_error()
            .map(|(code, reason)| format!("{code:?}: {reason}"))
    }

    /// Raises a fatal error the way librdkafka does (`rd_kafka_test_fatal_error`), for the test
    /// that proves one is noticed. Not for production use.
    #[doc(hidden)]
    pub fn raise_fatal_error_for_tests(&self) {
        let reason = std::ffi::CString::new("raised by a test").expect("no NUL");
        // SAFETY: the client pointer lives as long as `self.producer`; librdkafka copies the
        // reason before returning.
        unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                self.producer.client().native_ptr(),
                rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason.as_ptr(),
            );
        }
    }

    /// Waits for everything enqueued to be delivered; called on shutdown.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "producer flush did not complete");
        }
    }
}
