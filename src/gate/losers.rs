//! Position reads of a sold-out event's losers, answered from one read of the event a second.
//!
//! Most of a spike's position polls come from its losers (the stock is a small part of the
//! crowd). Once the event is latched (see `latch`), a loser's answer is `SOLD_OUT` with the
//! event's public numbers, the same for all of them. So each instance reads those numbers at
//! most once a second (one caller reads, the others meanwhile get the last read) and moves
//! Redis' clock on by the time since. A winner's read still goes to Redis: it carries their
//! ticket's current status.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::locks::lock;
use super::{Gate, GateError, Snapshot};
use crate::domain::{CouponId, UserId};

/// How old the event's numbers may be in a loser's answer (the dashboard polls as often).
const FRESH_FOR: Duration = Duration::from_secs(1);

/// The event as last read for its losers.
#[derive(Default)]
pub(super) struct EventView {
    last: Mutex<Option<(Snapshot, Instant)>>,
    refreshing: AtomicBool,
}

impl EventView {
    /// The last read, aged to now, and whether it is still fresh.
    fn last(&self) -> Option<(Snapshot, bool)> {
        let last = lock(&self.last);
        let (snapshot, read_at) = last.as_ref()?;
        let mut snapshot = snapshot.clone();
        let age = read_at.elapsed();
        snapshot.now += chrono::Duration::from_std(age).unwrap_or_default();
        Some((snapshot, age < FRESH_FOR))
    }

    fn keep(&self, snapshot: &Snapshot) {
        *lock(&self.last) = Some((snapshot.clone(), Instant::now()));
    }
}

impl Gate {
    /// `user`'s view of `coupon` without their own Redis read, when the event is latched and
    /// they are not one of its winners.
    pub(super) async fn losers_snapshot(
        &self,
        coupon: CouponId,
        user: UserId,
    ) -> Option<Result<Option<Snapshot>, GateError>> {
        let view = self.losers_view(coupon, user)?;
        let last = view.last();
        if let Some((snapshot, true)) = last {
            return Some(Ok(Some(snapshot)));
        }
        let refreshing = Refreshing::start(&view.refreshing);
        if let (Some((snapshot, _)), None) = (&last, &refreshing) {
            return Some(Ok(Some(snapshot.clone())));
        }
        let read = self.read_snapshot(coupon, None).await;
        if let Ok(Some(snapshot)) = &read {
            view.keep(snapshot);
        }
        Some(read)
    }
}

/// The one caller refreshing the view; it ends when its request does, even one dropped mid-way.
struct Refreshing<'a>(&'a AtomicBool);

impl<'a> Refreshing<'a> {
    fn start(flag: &'a AtomicBool) -> Option<Self> {
        (!flag.swap(true, Ordering::AcqRel)).then_some(Self(flag))
    }
}

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}
