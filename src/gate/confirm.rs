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
//!
//! A confirmation is only true of the server that took the write. The confirmer's connection
//! may have been replaced since (a failed `WAIT`, a failover, a restart): the new server may be
//! a promoted replica that never got the write, or the old one restarted empty. So each waiter
//! names its writes (users with their scores), and the same pipeline that sends the `SET` and
//! the `WAIT` first reads them back: on one connection, hence one server, a write read there
//! before the `SET` is covered by that server's `WAIT`. A write that is not there is not
//! confirmed, whatever the replicas say.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{Gate, GateError};
use crate::domain::CouponId;

/// What a caller wrote and needs replicated: users admitted to a coupon, with their scores.
#[derive(Debug, Clone)]
pub struct Written {
    pub coupon: CouponId,
    pub users: Vec<(i64, i64)>,
}

/// A waiting caller: what it wrote and where its answer goes.
type Waiting = (Written, oneshot::Sender<Answer>);

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

    /// Waits until `replicas` replicas of the server that holds `written` hold it.
    pub async fn confirm(self: &Arc<Self>, written: Written) -> Result<(), GateError> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(Arc::clone(self).run(rx));
            tx
        });
        let (answer, answered) = oneshot::channel();
        queue
            .send((written, answer))
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
                self.wait(format!("{}:acks", self.gate.prefix), group).await;
                continue;
            }
            let mut by_coupon: HashMap<CouponId, Vec<Waiting>> = HashMap::new();
            for waiting in group {
                by_coupon.entry(waiting.0.coupon).or_default().push(waiting);
            }
            let this = &self;
            futures::future::join_all(
                by_coupon
                    .into_iter()
                    .map(|(coupon, group)| this.wait(this.gate.keys(coupon).acks, group)),
            )
            .await;
        }
    }

    /// Reads every waiter's writes back, then `SET` + `WAIT`, on one connection; answers each.
    async fn wait(&self, counter: String, group: Vec<Waiting>) {
        let counter = &counter;
        let (replicas, timeout) = (self.replicas, self.timeout.as_millis() as u64);
        let written: Vec<&Written> = group.iter().map(|(w, _)| w).collect();
        let written = &written;
        let reply = self
            .gate
            .run(|mut conn| async move {
                let mut pipe = redis::pipe();
                for w in written.iter() {
                    let users: Vec<i64> = w.users.iter().map(|(user, _)| *user).collect();
                    pipe.cmd("ZMSCORE")
                        .arg(self.gate.keys(w.coupon).queue)
                        .arg(users);
                }
                // SET is replicated even when the value is unchanged; the key expires alone.
                pipe.cmd("SET")
                    .arg(counter)
                    .arg(1)
                    .arg("EX")
                    .arg(3600)
                    .ignore()
                    .cmd("WAIT")
                    .arg(replicas)
                    .arg(timeout);
                let mut reply: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
                let confirmed: u32 =
                    redis::from_redis_value(reply.pop().unwrap_or(redis::Value::Nil))?;
                let scores = reply
                    .into_iter()
                    .map(redis::from_redis_value::<Vec<Option<f64>>>)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((confirmed, scores))
            })
            .await;
        let (confirmed, scores) = match reply {
            Ok(reply) => reply,
            Err(e) => {
                tracing::warn!(error = ?e, "asking the replicas failed");
                for (_, waiting) in group {
                    let _ = waiting.send(Err(()));
                }
                return;
            }
        };
        for ((written, waiting), scores) in group.into_iter().zip(scores) {
            let here = written.users.len() == scores.len()
                && written
                    .users
                    .iter()
                    .zip(&scores)
                    .all(|((_, score), found)| *found == Some(*score as f64));
            if !here {
                tracing::warn!(coupon_id = %written.coupon, "a write is not on the server asked to confirm it (it failed over or restarted): not confirmed");
            }
            let _ = waiting.send(Ok(here && confirmed >= replicas));
        }
    }
}
