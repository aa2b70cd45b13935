//! Replica confirmation in groups (`APP_REDIS__ACK_REPLICAS`).
//!
//! `WAIT` blocks the connection it is sent on, and the gate's connections are shared by every
//! request: a `WAIT` after each admission queued every other request on that connection behind
//! a replica round trip (measured: 0.23 × the throughput without it). So admissions whose
//! script has returned ask a confirmer instead. It confirms them together on a connection of its
//! own: one write (`SET` of the prefix's ack key) and one `WAIT` cover every write Redis
//! processed before that `SET`, which includes each waiting admission, because its reply
//! arrived before it asked. Admissions arriving during a `WAIT` form the next group.
//!
//! On a cluster, `WAIT` counts the replicas of the master it is sent to, so a group is confirmed
//! per shard: one write and one `WAIT` in the slot of each coupon in the group, concurrently.
//! One server keeps a single counter for every coupon.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{Gate, GateError};
use crate::domain::CouponId;

/// A waiting caller: the coupon it wrote to and where its answer goes.
type Waiting = (CouponId, oneshot::Sender<Answer>);

/// One group's answer: confirmed, not confirmed in time, or Redis failed.
type Answer = Result<bool, ()>;

pub struct Confirmer {
    replicas: u32,
    timeout: Duration,
    /// The confirmer's own gate: one connection, no confirmation of its own.
    gate: Gate,
    /// Started on first use, inside the runtime.
    queue: OnceLock<mpsc::UnboundedSender<Waiting>>,
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

    /// Waits until `replicas` replicas hold every write Redis (the coupon's shard) processed
    /// before this call.
    pub async fn confirm(self: &Arc<Self>, coupon: CouponId) -> Result<(), GateError> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(Arc::clone(self).run(rx));
            tx
        });
        let (answer, answered) = oneshot::channel();
        queue
            .send((coupon, answer))
            .map_err(|_| GateError::Unavailable(anyhow::anyhow!("the confirmer stopped")))?;
        match answered.await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(GateError::NotReplicated),
            Ok(Err(())) | Err(_) => Err(GateError::Unavailable(anyhow::anyhow!(
                "could not ask the replicas"
            ))),
        }
    }

    async fn run(self: Arc<Self>, mut queue: mpsc::UnboundedReceiver<Waiting>) {
        while let Some(first) = queue.recv().await {
            let mut group = vec![first];
            while let Ok(next) = queue.try_recv() {
                group.push(next);
            }
            if !self.gate.cluster {
                let answer = self.wait(format!("{}:acks", self.gate.prefix)).await;
                for (_, waiting) in group {
                    let _ = waiting.send(answer);
                }
                continue;
            }
            let mut by_coupon: HashMap<CouponId, Vec<oneshot::Sender<Answer>>> = HashMap::new();
            for (coupon, waiting) in group {
                by_coupon.entry(coupon).or_default().push(waiting);
            }
            let this = &self;
            futures::future::join_all(by_coupon.into_iter().map(|(coupon, waiting)| {
                let counter = this.gate.keys(coupon).acks;
                async move {
                    let answer = this.wait(counter).await;
                    for waiting in waiting {
                        let _ = waiting.send(answer);
                    }
                }
            }))
            .await;
        }
    }

    async fn wait(&self, counter: String) -> Answer {
        let counter = &counter;
        let (replicas, timeout) = (self.replicas, self.timeout.as_millis() as u64);
        let confirmed = self
            .gate
            .run(|mut conn| async move {
                // SET is replicated even when the value is unchanged; the key expires alone.
                let (confirmed,): (u32,) = redis::pipe()
                    .cmd("SET")
                    .arg(counter)
                    .arg(1)
                    .arg("EX")
                    .arg(3600)
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
