//! What a signed-in user's own reads may cost. Position polls: a poll that comes sooner than
//! the answer could change is answered from this instance's copy of the user's last answer, so
//! a client that ignores `retryAfterMs` costs Redis at most one read a second. Reads that go to
//! PostgreSQL (`/me/coupons`, a position with `?receipt=true`) take a token from the user's
//! bucket, and a user past it hears 429 `RATE_LIMITED` with `Retry-After`.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use super::views::{ApplicationStatus, PositionView};
use crate::domain::{CouponId, UserId};

/// Database reads a user may make each second, and at once after a quiet spell.
const DB_READS_PER_SEC: u32 = 2;
const DB_READS_BURST: u32 = 10;
/// The longest a poll's answer is kept: a final answer could be kept for good, but a second
/// bounds what a restore or a redrive (which do change final-looking answers) leaves stale.
const KEEP_AT_MOST: Duration = Duration::from_secs(1);
/// Users' answers kept at most; past it the expired ones go, then if need be all of them.
const MAX_ANSWERS: usize = 200_000;

/// An answer, and until when it is served again.
type Kept = (Instant, Arc<PositionView>);

pub struct UserReads {
    db_reads: DefaultKeyedRateLimiter<i64>,
    clock: DefaultClock,
    answers: Mutex<HashMap<(CouponId, UserId), Kept>>,
}

impl Default for UserReads {
    fn default() -> Self {
        let quota = Quota::per_second(NonZeroU32::new(DB_READS_PER_SEC).expect("non-zero"))
            .allow_burst(NonZeroU32::new(DB_READS_BURST).expect("non-zero"));
        Self {
            db_reads: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            answers: Mutex::default(),
        }
    }
}

impl UserReads {
    /// Takes a token for one database read by `user`; `Err` says when one will be there.
    pub fn take_db_read(&self, user: UserId) -> Result<(), Duration> {
        (self.db_reads.check_key(&user.get()))
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// The user's last answer, while asking again could not have changed it.
    pub fn last_answer(&self, coupon: CouponId, user: UserId) -> Option<Arc<PositionView>> {
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        let (until, answer) = answers.get(&(coupon, user))?;
        (Instant::now() < *until).then(|| answer.clone())
    }

    /// Keeps an answer until it may change: `retryAfterMs`, at most [`KEEP_AT_MOST`]. Not
    /// kept: NOT_APPLIED, which the user's own application changes at once.
    pub fn keep(&self, coupon: CouponId, user: UserId, answer: Arc<PositionView>) {
        if answer.status == ApplicationStatus::NotApplied {
            return;
        }
        let keep_for = answer
            .retry_after_ms
            .map_or(KEEP_AT_MOST, Duration::from_millis)
            .min(KEEP_AT_MOST);
        let now = Instant::now();
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        if answers.len() >= MAX_ANSWERS {
            answers.retain(|_, (until, _)| *until > now);
            if answers.len() >= MAX_ANSWERS {
                answers.clear();
            }
        }
        answers.insert((coupon, user), (now + keep_for, answer));
    }

    /// Forgets every answer about an event that was just deleted here.
    pub fn forget_coupon(&self, coupon: CouponId) {
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        answers.retain(|(c, _), _| *c != coupon);
    }

    /// Forgets idle buckets and expired answers (see `SWEEP_INTERVAL`).
    pub fn sweep(&self) {
        self.db_reads.retain_recent();
        self.db_reads.shrink_to_fit();
        let now = Instant::now();
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        answers.retain(|_, (until, _)| *until > now);
        answers.shrink_to_fit();
    }
}
