//! Batched admission (`APP_GATE__BATCH_WINDOW_US`, `APP_GATE__BATCH_MAX`).
//!
//! One event lives on one Redis core, and a script call costs that core far more than deciding
//! one application inside it. So the applications this instance receives for one event close
//! together go in one call (`Gate::apply_batch`), in the order they arrived here, and the script
//! decides them one by one exactly as separate calls would.
//!
//! Group commit with a deadline: an application that finds nothing of its event on its way to
//! Redis from here leaves at once (an idle event adds no latency). Otherwise it joins the open
//! batch, which leaves when the calls in flight come back, when it is full, or when its window
//! has passed, whichever is first. The window is kept by the batch's own task yielding to the
//! runtime until it has passed: tokio's timers count milliseconds, and the window is a few
//! hundred microseconds. A wake-up thread with OS timers was tried instead and measured worse
//! on a loaded machine (its wake-ups came late: README, Performance).
//!
//! Order: a batch keeps the order its applications arrived here in. An application can be
//! decided after one that arrived later (here, or at another instance) only if it waited in an
//! open batch while the other went in a call that left first, so only if the two arrived within
//! one window of each other, given that calls reach Redis in the order they leave (calls on
//! different connections, batched or not, race: README's Guarantees).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::locks::lock;
use super::{Admission, Gate, GateError};
use crate::domain::{CouponId, UserId};

type Answer = Result<Admission, GateError>;

pub(super) struct Batching {
    window: Duration,
    max: usize,
    /// Events with a batch open or in flight here; an idle one is removed (see `Flight`).
    lanes: Mutex<HashMap<CouponId, Arc<Lane>>>,
    next_id: AtomicU64,
}

/// One event's batches on this instance.
#[derive(Default)]
struct Lane {
    /// The batch that is taking applications, if any.
    open: Mutex<Option<Batch>>,
    /// Calls of this event sent to Redis and not answered yet; raised under `open`'s lock by
    /// whoever takes the batch, so a joiner never sees the event idle while a batch is leaving.
    in_flight: AtomicUsize,
}

struct Batch {
    id: u64,
    members: Vec<(UserId, oneshot::Sender<Answer>)>,
}

/// Where a batch goes when it leaves.
#[derive(Clone)]
struct Route {
    gate: Gate,
    coupon: CouponId,
    lane: Arc<Lane>,
    runtime: Handle,
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
        let (opened, leaving) = {
            let mut open = lock(&lane.open);
            let opened = open
                .is_none()
                .then(|| self.next_id.fetch_add(1, Ordering::Relaxed));
            let batch = open.get_or_insert_with(|| Batch {
                id: opened.unwrap_or_default(),
                members: Vec::new(),
            });
            batch.members.push((user, answer));
            let idle = lane.in_flight.load(Ordering::Acquire) == 0;
            let leaving = (idle || batch.members.len() >= self.max)
                .then(|| take(&lane, &mut open))
                .flatten();
            (opened, leaving)
        };
        // Only the application that sends a batch or opens one needs a route; under a crowd
        // most join a batch already open and pay nothing more.
        let route = || Route {
            gate: gate.clone(),
            coupon,
            lane: lane.clone(),
            runtime: Handle::current(),
        };
        match (leaving, opened) {
            (Some(batch), _) => send(route(), batch),
            (None, Some(id)) => {
                let due = Instant::now() + self.window;
                Handle::current().spawn(leave_when_due(route(), id, due));
            }
            (None, None) => {}
        }
        // Not held while waiting, so the lane can be forgotten as soon as its calls end.
        drop(lane);
        answered.await.unwrap_or_else(|_| {
            Err(GateError::Unexpected(anyhow::anyhow!(
                "the batch was dropped unanswered"
            )))
        })
    }

    /// Events with a batch open or in flight here.
    pub(super) fn lanes(&self) -> usize {
        lock(&self.lanes).len()
    }

    fn lane(&self, coupon: CouponId) -> Arc<Lane> {
        lock(&self.lanes).entry(coupon).or_default().clone()
    }

    /// Forgets an event's lane once nothing is open or in flight and nobody else holds it, so
    /// the map holds only events in use.
    fn forget_if_idle(&self, coupon: CouponId, lane: &Arc<Lane>) {
        let mut lanes = lock(&self.lanes);
        let idle = lane.in_flight.load(Ordering::Acquire) == 0 && lock(&lane.open).is_none();
        // Held by the map and by the caller only: no joiner, no batch waiting for its window.
        if idle && Arc::strong_count(lane) == 2 {
            lanes.remove(&coupon);
        }
    }
}

/// Takes the open batch to send it, counting it in flight while `open`'s lock is held.
fn take(lane: &Lane, open: &mut Option<Batch>) -> Option<Batch> {
    let batch = open.take()?;
    lane.in_flight.fetch_add(1, Ordering::AcqRel);
    Some(batch)
}

/// Sends batch `id` once `due` has passed, unless it left before (full, or handed over when the
/// calls in flight came back).
async fn leave_when_due(route: Route, id: u64, due: Instant) {
    loop {
        let batch = {
            let mut open = lock(&route.lane.open);
            match open.as_ref() {
                Some(batch) if batch.id == id => {
                    if Instant::now() < due {
                        None
                    } else {
                        take(&route.lane, &mut open)
                    }
                }
                _ => return,
            }
        };
        if let Some(batch) = batch {
            return send(route, batch);
        }
        tokio::task::yield_now().await;
    }
}

/// Sends a batch on a task of its own (a member whose client goes away must not take the
/// others' call with it) and answers each member.
fn send(route: Route, batch: Batch) {
    let runtime = route.runtime.clone();
    runtime.spawn(async move {
        // A client that went away before its batch left is not applied for, as it would not
        // have been without batching.
        let members: Vec<_> = (batch.members.into_iter())
            .filter(|(_, answer)| !answer.is_closed())
            .collect();
        let users: Vec<UserId> = members.iter().map(|(user, _)| *user).collect();
        // The only route this task holds, so the lane can be forgotten when it ends.
        let flight = Flight(route);
        let answers = if users.is_empty() {
            Ok(Vec::new())
        } else {
            flight.0.gate.apply_batch(flight.0.coupon, &users).await
        };
        // The next batch leaves before these answers go out.
        drop(flight);
        match answers {
            Ok(answers) => {
                for ((_, answer), admission) in members.into_iter().zip(answers) {
                    let _ = answer.send(admission);
                }
            }
            // No application of the batch was decided.
            Err(e) => {
                for (_, answer) in members {
                    let _ = answer.send(Err(e.shared()));
                }
            }
        }
    });
}

/// A call in flight. When it ends (answered, failed, or its task panicked), the event's next
/// batch leaves if this was the last call in flight: that is the group commit.
struct Flight(Route);

impl Drop for Flight {
    fn drop(&mut self) {
        let route = &self.0;
        let batch = {
            let mut open = lock(&route.lane.open);
            let last = route.lane.in_flight.fetch_sub(1, Ordering::AcqRel) == 1;
            if last {
                take(&route.lane, &mut open)
            } else {
                None
            }
        };
        match batch {
            Some(batch) => send(route.clone(), batch),
            None => {
                if let Some(batching) = &route.gate.batching {
                    batching.forget_if_idle(route.coupon, &route.lane);
                }
            }
        }
    }
}
