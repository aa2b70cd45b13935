//! Tickets this instance told, remembered until their winner is persisted.
//!
//! With `APP_REDIS__ACK_REPLICAS=0` an admission lives only in the Redis master's memory until
//! the issuer publishes it: a Redis that loses its memory in that second loses the winner. So
//! each instance also keeps the tickets it told (a few dozen bytes each, only while unpersisted);
//! when the watcher finds a coupon held, every live instance writes what it remembers of it back
//! into Redis (`told`, in the coupon's slot), and the restore puts those winners back at the
//! places they were told (see restore.lua). A winner is then lost only when Redis and the
//! instance that answered them both lose it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::locks::lock;
use super::{Gate, GateError};
use crate::domain::CouponId;

/// How long tickets written back into Redis live if no restore takes them.
const TOLD_TTL_SECS: i64 = 3600;

/// One coupon's tickets: position -> (user, score in µs).
type Tickets = BTreeMap<u32, (i64, i64)>;

#[derive(Default)]
pub(super) struct Told(Mutex<HashMap<CouponId, Tickets>>);

impl Gate {
    /// Remembers a ticket this instance just told (only when no replica confirms admissions).
    pub(super) fn remember_told(&self, coupon: CouponId, user: i64, position: u32, score: i64) {
        if self.ack.is_none() {
            lock(&self.told.0)
                .entry(coupon)
                .or_default()
                .insert(position, (user, score));
        }
    }

    /// Forgets the tickets of a coupon up to position `persisted` (the caller knows every
    /// position up to it persisted or lost), or all of them when `None` (it is retired).
    pub fn forget_told(&self, coupon: CouponId, persisted: Option<u32>) {
        let mut told = lock(&self.told.0);
        let Some(tickets) = told.get_mut(&coupon) else {
            return;
        };
        match persisted {
            Some(rows) => tickets.retain(|position, _| *position > rows),
            None => tickets.clear(),
        }
        if tickets.is_empty() {
            told.remove(&coupon);
        }
    }

    /// Writes the tickets this instance remembers of a held coupon into Redis, for its restore;
    /// how many. Safe to repeat.
    pub async fn announce_told(&self, coupon: CouponId) -> Result<usize, GateError> {
        let tickets: Vec<(i64, String)> = match lock(&self.told.0).get(&coupon) {
            Some(tickets) => tickets
                .iter()
                .map(|(position, (user, score))| (*user, format!("{position}:{score}")))
                .collect(),
            None => return Ok(0),
        };
        if tickets.is_empty() {
            return Ok(0);
        }
        let key = self.keys(coupon).told;
        let (key, tickets) = (&key, &tickets);
        // The restore deletes it; one written after that restore (a look that began before
        // it) must not linger.
        self.run(|mut conn| async move {
            redis::pipe()
                .cmd("HSET")
                .arg(key)
                .arg(tickets)
                .ignore()
                .expire(key, TOLD_TTL_SECS)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
        })
        .await?;
        Ok(tickets.len())
    }
}
