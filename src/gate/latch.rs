//! The sold-out latch: once an event is sold out, an instance answers its losers `SOLD_OUT`
//! without asking Redis.
//!
//! Sold out is for good: the queue holds winners only, is never shortened, and stays full,
//! except when a hold rebuilds the event from PostgreSQL after Redis lost state (see
//! `ops::reconcile`). So when an instance is first answered `SOLD_OUT` for an event, it reads
//! the event's winners once (at most `stock` user ids, in one atomic read that also checks the
//! event is not held), and from then on answers everyone else `SOLD_OUT` itself. A winner who
//! applies again still asks Redis (their answer carries their current status). The watcher
//! drops the latch as soon as it sees the event held, missing or no longer full, which it does
//! before any restore finishes (a hold lasts at least the producer's send timeout, the watcher
//! looks every second). A retired event keeps its latch until its keys expire: its losers keep
//! coming. After the event's close time, the latch stands aside (Redis answers
//! `EVENT_CLOSED`).
//!
//! A latch answers only while the watcher keeps confirming it (every look, see `keep_latch`):
//! a watcher that stalled (PostgreSQL slow, the task stuck) cannot see a hold, so a latch it
//! has not confirmed for [`LATCH_TRUSTED_FOR`] stands aside and Redis answers again.
//!
//! Answers given here are counted like every other (see `counting`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;

use super::locks::{lock, read, write};
use super::losers::EventView;
use super::{Gate, GateError};
use crate::domain::{CouponId, UserId};

#[derive(Default)]
pub(super) struct Latches {
    sold_out: RwLock<HashMap<CouponId, Arc<Latch>>>,
    /// Events whose winners are being read, so one `SOLD_OUT` burst reads them once.
    reading: Mutex<HashSet<CouponId>>,
}

/// stock, recovering, closes_at_us
type MetaFields = (Option<u64>, Option<String>, Option<i64>);

/// How long a latch answers after the watcher last confirmed it: a few of its looks.
pub const LATCH_TRUSTED_FOR: Duration = Duration::from_secs(3);

/// The process' own clock for latch ages (monotonic, in milliseconds since first use).
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

struct Latch {
    /// When the watcher last confirmed it (see `now_ms`).
    kept_at: AtomicU64,
    winners: HashSet<i64>,
    closes_at_us: Option<i64>,
    /// What its losers are shown (see `losers`).
    losers_view: Arc<EventView>,
}

impl Gate {
    /// True when this instance may answer `user` `SOLD_OUT` for `coupon` without Redis (and
    /// has counted the application).
    pub fn answers_sold_out(&self, coupon: CouponId, user: UserId) -> bool {
        let Some(latch) = self.latch_of(coupon) else {
            return false;
        };
        let open = latch
            .closes_at_us
            .is_none_or(|closes| Utc::now().timestamp_micros() < closes);
        if !open || latch.winners.contains(&user.get()) {
            return false;
        }
        self.count_application(coupon);
        true
    }

    /// What `user` is shown of `coupon`, when it is latched and they are not a winner.
    pub(super) fn losers_view(&self, coupon: CouponId, user: UserId) -> Option<Arc<EventView>> {
        let latch = self.latch_of(coupon)?;
        (!latch.winners.contains(&user.get())).then(|| latch.losers_view.clone())
    }

    /// Redis answered `SOLD_OUT` for `coupon`: reads its winners (once, in the background) and
    /// latches it.
    pub(super) fn latch_soon(&self, coupon: CouponId) {
        if self.latched(coupon) || !lock(&self.latches.reading).insert(coupon) {
            return;
        }
        let gate = self.clone();
        tokio::spawn(async move {
            match gate.read_latch(coupon).await {
                Ok(Some(latch)) => {
                    let mut latched = write(&gate.latches.sold_out);
                    latched.insert(coupon, Arc::new(latch));
                    gate.count_latches(latched.len());
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(coupon_id = %coupon, error = ?e, "reading the winners failed; the latch waits for the next SOLD_OUT")
                }
            }
            lock(&gate.latches.reading).remove(&coupon);
        });
    }

    /// The event's winners, when it is sold out and not held.
    async fn read_latch(&self, coupon: CouponId) -> Result<Option<Latch>, GateError> {
        let keys = self.keys(coupon);
        let keys = &keys;
        let ((stock, recovering, closes), winners): (MetaFields, Vec<String>) = self
            .run(|mut conn| async move {
                redis::pipe()
                    .atomic()
                    .cmd("HMGET")
                    .arg(&keys.meta)
                    .arg(&["stock", "recovering", "closes_at_us"])
                    .zrange(&keys.queue, 0, -1)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let full = stock.is_some_and(|stock| winners.len() as u64 >= stock);
        if recovering.is_some() || !full {
            return Ok(None);
        }
        Ok(Some(Latch {
            kept_at: AtomicU64::new(now_ms()),
            // Lost-position placeholders are nobody's: they parse as no user.
            winners: winners.iter().filter_map(|w| w.parse().ok()).collect(),
            closes_at_us: closes,
            losers_view: Arc::default(),
        }))
    }

    /// Forgets the latch of an event that may take applications again (held, missing, or no
    /// longer full).
    pub fn unlatch(&self, coupon: CouponId) {
        // The watcher asks this for every event every second: only a latched one takes the
        // write lock that the apply path's readers wait on.
        if !self.latched(coupon) {
            return;
        }
        let mut latched = write(&self.latches.sold_out);
        if latched.remove(&coupon).is_some() {
            self.count_latches(latched.len());
            tracing::info!(coupon_id = %coupon, "sold-out latch dropped: the event is asked in Redis again");
        }
    }

    /// The watcher saw the event still sold out and not held: its latch may go on answering.
    pub fn keep_latch(&self, coupon: CouponId) {
        if let Some(latch) = read(&self.latches.sold_out).get(&coupon) {
            latch.kept_at.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// The event's latch, while the watcher keeps confirming it.
    fn latch_of(&self, coupon: CouponId) -> Option<Arc<Latch>> {
        let latch = read(&self.latches.sold_out).get(&coupon).cloned()?;
        let age = now_ms().saturating_sub(latch.kept_at.load(Ordering::Relaxed));
        (age <= LATCH_TRUSTED_FOR.as_millis() as u64).then_some(latch)
    }

    /// Whether an event has a latch, trusted or not.
    fn latched(&self, coupon: CouponId) -> bool {
        read(&self.latches.sold_out).contains_key(&coupon)
    }

    fn count_latches(&self, latched: usize) {
        if let Some(metrics) = &self.metrics {
            metrics.sold_out_latched.set(latched as i64);
        }
    }
}
