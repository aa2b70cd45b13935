//! Batched admission (`APP_GATE__BATCH_WINDOW_US`, `APP_GATE__BATCH_MAX`).
//!
//! One event lives on one Redis core, and a script call costs that core far more than deciding
//! one application inside it. So the applications this instance receives for one event close
//! together go in one call (`Gate::apply_batch`), in the order they arrived here, and the script
//! decides them one by one exactly as separate calls would.
//!
//! A batch opens with its first application and leaves when it is full, when its window has
//! passed, or as soon as no batch of its event is on its way to Redis from here: an idle event
//! sends each application at once (no added latency), and a busy one fills the next batch while
//! the previous one is in Redis (group commit). Waiting for the window is a yield loop, not a
//! timer: tokio's timers count milliseconds, and the window is a few hundred microseconds.
//!
//! Order: a batch keeps the order its applications arrived here in. An application can be
//! decided after one that arrived later (here, or at another instance) only if it waited here
//! for its batch while the other did not, so only if the two arrived within one window of each
//! other: that is the bound README's Guarantees state, measured by `fcfs-bench spike`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::locks::lock;
use super::{Admission, Gate, GateError};
use crate::domain::{CouponId, UserId};

type Answer = Result<Admission, GateError>;

pub(super) struct Batching {
    window: Duration,
    max: usize,
    lanes: Mutex<HashMap<CouponId, Arc<Lane>>>,
    next_id: AtomicU64,
}

/// One event's batches on this instance.
#[derive(Default)]
struct Lane {
    /// The batch that is taking applications, if any (held only to add or take).
    open: Mutex<Option<Batch>>,
    /// Batches of this event sent to Redis and not answered yet.
    in_flight: AtomicUsize,
}

struct Batch {
    id: u64,
    opened: Instant,
    members: Vec<(UserId, oneshot::Sender<Answer>)>,
}

impl Batching {
    pub(super) fn new(window: Duration, max: usize) -> Self {
        Self {
            window,
            max: max.max(1),
            lanes: Mutex::default(),
            next_id: AtomicU64::new(0),
        }
    }

    pub(super) fn window_us(&self) -> u32 {
        u32::try_from(self.window.as_micros()).unwrap_or(u32::MAX)
    }

    /// Joins `user` to `coupon`'s open batch (opening one if there is none) and waits for the
    /// batch's answer to them.
    pub(super) async fn admit(&self, gate: &Gate, coupon: CouponId, user: UserId) -> Answer {
        let lane = self.lane(coupon);
        let (answer, answered) = oneshot::channel();
        let (opened, full) = {
            let mut open = lock(&lane.open);
            let opened = open
                .is_none()
                .then(|| self.next_id.fetch_add(1, Ordering::Relaxed));
            let batch = open.get_or_insert_with(|| Batch {
                id: opened.unwrap_or_default(),
                opened: Instant::now(),
                members: Vec::with_capacity(self.max),
            });
            batch.members.push((user, answer));
            let full = (batch.members.len() >= self.max)
                .then(|| open.take())
                .flatten();
            (opened, full)
        };
        if let Some(batch) = full {
            send(gate, coupon, &lane, batch);
        } else if let Some(id) = opened {
            // The batch leaves on its own task: a member whose client goes away must not take
            // the others' call with it.
            let (gate, lane, window) = (gate.clone(), lane.clone(), self.window);
            tokio::spawn(async move { leave_when_due(gate, coupon, lane, id, window).await });
        }
        answered.await.unwrap_or_else(|_| {
            Err(GateError::Unexpected(anyhow::anyhow!(
                "the batch was dropped unanswered"
            )))
        })
    }

    fn lane(&self, coupon: CouponId) -> Arc<Lane> {
        lock(&self.lanes).entry(coupon).or_default().clone()
    }
}

/// Waits until batch `id` is due (window passed, or nothing of its event in flight) and sends
/// it, unless it filled up and left before.
async fn leave_when_due(gate: Gate, coupon: CouponId, lane: Arc<Lane>, id: u64, window: Duration) {
    loop {
        let due = {
            let mut open = lock(&lane.open);
            match open.as_ref() {
                Some(batch) if batch.id == id => {
                    let idle = lane.in_flight.load(Ordering::Acquire) == 0;
                    (idle || batch.opened.elapsed() >= window)
                        .then(|| open.take())
                        .flatten()
                }
                // Full, and sent by the application that filled it.
                _ => return,
            }
        };
        if let Some(batch) = due {
            return send(&gate, coupon, &lane, batch);
        }
        tokio::task::yield_now().await;
    }
}

/// Sends a batch on a task of its own and answers each member.
fn send(gate: &Gate, coupon: CouponId, lane: &Arc<Lane>, batch: Batch) {
    lane.in_flight.fetch_add(1, Ordering::AcqRel);
    let (gate, lane) = (gate.clone(), lane.clone());
    tokio::spawn(async move {
        // A client that went away before its batch left is not applied for, as it would not
        // have been without batching.
        let members: Vec<_> = (batch.members.into_iter())
            .filter(|(_, answer)| !answer.is_closed())
            .collect();
        let users: Vec<UserId> = members.iter().map(|(user, _)| *user).collect();
        let answers = if users.is_empty() {
            Ok(Vec::new())
        } else {
            gate.apply_batch(coupon, &users).await
        };
        lane.in_flight.fetch_sub(1, Ordering::AcqRel);
        match answers {
            Ok(answers) => {
                for ((_, answer), admission) in members.into_iter().zip(answers) {
                    let _ = answer.send(Ok(admission));
                }
            }
            Err(e) => {
                for (_, answer) in members {
                    let _ = answer.send(Err(e.shared()));
                }
            }
        }
    });
}
