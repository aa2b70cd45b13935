//! Every application is counted here, in-process, and added to its event's `applications` once
//! a second (`flush_counts`): a counter for the dashboard must not cost each request a write
//! on the event's Redis shard. What an instance counted in its last second before it died is
//! lost; admissions never depend on this count.
//!
//! Each addition carries an identity of its own, and Redis remembers the identities it added
//! for a minute: an addition whose reply was lost is sent again with the same identity and
//! counted once.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use redis::Script;

use super::locks::{lock, read};
use super::Gate;
use crate::domain::CouponId;

/// Adds to `applications` once per identity, and only while the event's definition is there:
/// a count arriving while the state is lost or held waits (0), one after the keys expired
/// (retired) is dropped by the caller.
static COUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('HEXISTS', KEYS[1], 'stock') == 0 then return 0 end \
         if redis.call('SET', KEYS[2], '1', 'NX', 'EX', 60) then \
           redis.call('HINCRBY', KEYS[1], 'applications', ARGV[1]) end \
         return 1",
    )
});

/// One addition not yet confirmed: its identity and how many it adds.
struct Unconfirmed {
    id: String,
    count: u64,
}

/// Applications answered here, not yet added to each event's `applications`.
#[derive(Default)]
pub(super) struct Counts {
    fresh: Mutex<HashMap<CouponId, u64>>,
    /// Sent before without a confirmed answer: sent again as they are, never merged.
    unconfirmed: Mutex<Vec<(CouponId, Unconfirmed)>>,
}

impl Counts {
    fn add(&self, coupon: CouponId, count: u64) {
        *lock(&self.fresh).entry(coupon).or_default() += count;
    }

    /// What to send now: the unconfirmed additions, then the fresh counts under new identities.
    fn take(&self) -> Vec<(CouponId, Unconfirmed)> {
        let mut out: Vec<_> = lock(&self.unconfirmed).drain(..).collect();
        out.extend(lock(&self.fresh).drain().map(|(coupon, count)| {
            let id = format!("{:016x}", rand::random::<u64>());
            (coupon, Unconfirmed { id, count })
        }));
        out
    }
}

impl Gate {
    /// One application for `coupon` was answered (by Redis or by the sold-out latch).
    pub(super) fn count_application(&self, coupon: CouponId) {
        self.count_applications(coupon, 1);
    }

    /// `count` applications for `coupon` were answered (one batch).
    pub(super) fn count_applications(&self, coupon: CouponId, count: u64) {
        self.counts.add(coupon, count);
    }

    /// Adds the applications answered here to each event's `applications` (one call per
    /// event); what cannot be added now is kept, with its identity, for the next time.
    pub async fn flush_counts(&self) {
        for (coupon, addition) in self.counts.take() {
            let keys = self.keys(coupon);
            let counted = keys.counted(&addition.id);
            let (meta, counted, count) = (&keys.meta, &counted, addition.count);
            let added: Result<u8, _> = self
                .run(|mut conn| async move {
                    COUNT
                        .key(meta)
                        .key(counted)
                        .arg(count)
                        .invoke_async(&mut conn)
                        .await
                })
                .await;
            let retired = read(&self.retired).contains(&coupon);
            match added {
                Ok(1) => {}
                // Its keys expired: PostgreSQL keeps the count it had when it was retired.
                Ok(_) if retired => {}
                _ => lock(&self.counts.unconfirmed).push((coupon, addition)),
            }
        }
    }
}
