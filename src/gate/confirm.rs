//! Replica confirmation in groups (`APP_REDIS__ACK_REPLICAS`).
//!
//! `WAIT` blocks the connection it is sent on, and the gate's connections are shared by every
//! request: a `WAIT` after each admission queued every other request on that connection behind
//! a replica round trip (measured: 0.23 × the throughput without it). So admissions whose
//! script has returned ask a confirmer instead. It confirms them together on a connection of its
//! own: one write (`INCR` of the prefix's ack counter) and one `WAIT` cover every write Redis
//! processed before that `INCR`, which includes each waiting admission, because its reply
//! arrived before it asked. Admissions arriving during a `WAIT` form the next group.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{Gate, GateError};

/// One group's answer: confirmed, not confirmed in time, or Redis failed.
type Answer = Result<bool, ()>;

pub struct Confirmer {
    replicas: u32,
    timeout: Duration,
    /// The confirmer's own gate: one connection, no confirmation of its own.
    gate: Gate,
    /// Started on first use, inside the runtime.
    queue: OnceLock<mpsc::UnboundedSender<oneshot::Sender<Answer>>>,
}

impl Confirmer {
    pub fn new(gate: Gate, replicas: u32, timeout: Duration) -> Self {
        Self {
            replicas,
            timeout,
            gate,
            queue: OnceLock::new(),
        }
    }

    /// Waits until `replicas` replicas hold every write Redis processed before this call.
    pub async fn confirm(self: &Arc<Self>) -> Result<(), GateError> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(Arc::clone(self).run(rx));
            tx
        });
        let (answer, answered) = oneshot::channel();
        queue
            .send(answer)
            .map_err(|_| GateError::Unavailable(anyhow::anyhow!("the confirmer stopped")))?;
        match answered.await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(GateError::NotReplicated),
            Ok(Err(())) | Err(_) => Err(GateError::Unavailable(anyhow::anyhow!(
                "could not ask the replicas"
            ))),
        }
    }

    async fn run(self: Arc<Self>, mut queue: mpsc::UnboundedReceiver<oneshot::Sender<Answer>>) {
        let counter = format!("{}:acks", self.gate.prefix);
        while let Some(first) = queue.recv().await {
            let mut group = vec![first];
            while let Ok(next) = queue.try_recv() {
                group.push(next);
            }
            let answer = self.wait(&counter).await;
            for waiting in group {
                let _ = waiting.send(answer);
            }
        }
    }

    async fn wait(&self, counter: &str) -> Answer {
        let (replicas, timeout) = (self.replicas, self.timeout.as_millis() as u64);
        let confirmed = self
            .gate
            .run(|mut conn| async move {
                let (confirmed,): (u32,) = redis::pipe()
                    .incr(counter, 1)
                    .ignore()
                    .cmd("WAIT")
                    .arg(replicas)
                    .arg(timeout)
                    .query_async(&mut conn)
                    .await?;
                Ok(confirmed)
            })
            .await;
        match confirmed {
            Ok(count) => Ok(count >= replicas),
            Err(e) => {
                tracing::warn!(error = ?e, "asking the replicas failed");
                Err(())
            }
        }
    }
}
