//! Every application is counted here, in-process, and added to its event's `applications` once
//! a second (`flush_counts`): a counter for the dashboard must not cost each request a write
//! on the event's Redis shard. What an instance counted in its last second before it died is
//! lost; admissions never depend on this count.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use redis::Script;

use super::locks::lock;
use super::Gate;
use crate::domain::CouponId;

/// Adds to `applications` only while the event's definition is there: a count arriving after
/// the keys expired (retired) or were lost must not leave a meta hash without a stock behind.
static COUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('HEXISTS', KEYS[1], 'stock') == 1 then \
           redis.call('HINCRBY', KEYS[1], 'applications', ARGV[1]) end",
    )
});

/// Applications answered here, not yet added to each event's `applications`.
#[derive(Default)]
pub(super) struct Counts(Mutex<HashMap<CouponId, u64>>);

impl Counts {
    fn add(&self, coupon: CouponId, count: u64) {
        *lock(&self.0).entry(coupon).or_default() += count;
    }

    fn take(&self) -> Vec<(CouponId, u64)> {
        lock(&self.0).drain().collect()
    }
}

impl Gate {
    /// One application for `coupon` was answered (by Redis or by the sold-out latch).
    pub(super) fn count_application(&self, coupon: CouponId) {
        self.counts.add(coupon, 1);
    }

    /// Adds the applications answered here to each event's `applications` (one call per
    /// event); what cannot be added now is kept for the next time.
    pub async fn flush_counts(&self) {
        for (coupon, count) in self.counts.take() {
            let meta = self.keys(coupon).meta;
            let meta = &meta;
            let added = self
                .run(|mut conn| async move {
                    COUNT
                        .key(meta)
                        .arg(count)
                        .invoke_async::<()>(&mut conn)
                        .await
                })
                .await;
            if added.is_err() {
                self.counts.add(coupon, count);
            }
        }
    }
}
