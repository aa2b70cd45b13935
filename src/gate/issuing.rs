//! The gate's side of issuance: claiming winners for the batch issuer and moving their status
//! forward as they are published and persisted.

use std::sync::LazyLock;
use std::time::Duration;

use anyhow::anyhow;
use redis::Script;

use super::confirm::Written;
use super::{micros_to_time, parse_field, Gate, GateError};
use crate::domain::{CouponId, Position, Status, UserId, Winner};

static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("claim.lua")));
static ADVANCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("counts.lua"),
        include_str!("advance.lua")
    ))
});
static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("release.lua")));
static REDRIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("counts.lua"),
        include_str!("redrive.lua")
    ))
});

#[derive(Debug, Default)]
pub struct Claim {
    pub winners: Vec<Winner>,
    /// Sold out or closed, with nothing pending or in flight: the coupon is done for good.
    pub finished: bool,
}

/// Where a coupon's winners are: admitted in all, still pending, claimed but not acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Every application the gate answered for the coupon, admitted or not.
    pub applications: u64,
    pub admitted: u64,
    pub pending: u64,
    pub inflight: u64,
}

impl Backlog {
    /// Winners whose message is on Kafka (or further).
    pub fn published(&self) -> u64 {
        self.admitted.saturating_sub(self.pending + self.inflight)
    }
}

impl Gate {
    pub async fn backlog(&self, coupon: CouponId) -> Result<Backlog, GateError> {
        let keys = self.keys(coupon);
        let keys = &keys;
        let (applications, admitted, pending, inflight): (Option<u64>, u64, u64, u64) = self
            .run(|mut conn| async move {
                redis::pipe()
                    .hget(&keys.meta, "applications")
                    .zcard(&keys.queue)
                    .llen(&keys.pending)
                    .zcard(&keys.inflight)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(Backlog {
            applications: applications.unwrap_or_default(),
            admitted,
            pending,
            inflight,
        })
    }

    /// The registry of coupons the issuer looks at, so it never scans the keyspace.
    pub(super) fn registry_key(&self) -> String {
        format!("{}:coupons", self.prefix)
    }

    pub async fn active_coupons(&self) -> Result<Vec<CouponId>, GateError> {
        let key = self.registry_key();
        let key = &key;
        let ids: Vec<i64> =
            self.run(|mut conn| async move {
                redis::cmd("SMEMBERS").arg(key).query_async(&mut conn).await
            })
            .await?;
        Ok(ids
            .into_iter()
            .filter_map(|id| CouponId::new(id).ok())
            .collect())
    }

    /// Takes a finished coupon off the issuer's list.
    pub async fn retire(&self, coupon: CouponId) -> Result<(), GateError> {
        let key = self.registry_key();
        let key = &key;
        self.run(|mut conn| async move {
            redis::cmd("SREM")
                .arg(key)
                .arg(coupon.get())
                .query_async::<()>(&mut conn)
                .await
        })
        .await
    }

    pub async fn claim(
        &self,
        coupon: CouponId,
        batch: usize,
        lease: Duration,
    ) -> Result<Claim, GateError> {
        let keys = self.keys(coupon);
        let keys = &keys;
        let reply: Vec<String> = self
            .run(|mut conn| async move {
                CLAIM
                    .key(&keys.pending)
                    .key(&keys.inflight)
                    .key(&keys.queue)
                    .key(&keys.status)
                    .key(&keys.meta)
                    .arg(batch)
                    .arg(lease.as_millis() as u64)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let claim = parse_claim(coupon, &reply)?;
        // Publish only what a promoted replica would hold: confirmed after the claim, the
        // replicas hold every admission it took.
        if let (Some(ack), false) = (&self.ack, claim.winners.is_empty()) {
            let users = claim
                .winners
                .iter()
                .map(|w| (w.user.get(), w.applied_at.timestamp_micros()))
                .collect();
            if let Err(e) = ack.confirm(Written { coupon, users }).await {
                let users: Vec<UserId> = claim.winners.iter().map(|w| w.user).collect();
                self.release(coupon, &users).await?;
                return Err(e);
            }
        }
        Ok(claim)
    }

    /// Moves users' status forward (never back) and drops them from inflight.
    pub async fn advance(
        &self,
        coupon: CouponId,
        to: Status,
        users: &[UserId],
    ) -> Result<u64, GateError> {
        let keys = self.keys(coupon);
        let keys = [&keys.status, &keys.inflight, &keys.meta];
        self.for_users(&ADVANCE, &keys, Some(to.as_str()), users)
            .await
    }

    /// Returns claimed winners whose send failed to the head of pending.
    pub async fn release(&self, coupon: CouponId, users: &[UserId]) -> Result<u64, GateError> {
        let keys = self.keys(coupon);
        let keys = [&keys.pending, &keys.inflight, &keys.status];
        self.for_users(&RELEASE, &keys, None, users).await
    }

    /// Puts a coupon's FAILED winners back in pending (see redrive.lua) and the coupon back on
    /// the issuer's list; how many went back.
    pub async fn redrive(&self, coupon: CouponId) -> Result<u64, GateError> {
        let keys = self.keys(coupon);
        let keys = &keys;
        let redriven: u64 = self
            .run(|mut conn| async move {
                REDRIVE
                    .key(&keys.pending)
                    .key(&keys.status)
                    .key(&keys.queue)
                    .key(&keys.meta)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        if redriven > 0 {
            self.enlist(coupon).await?;
        }
        Ok(redriven)
    }

    /// Runs a script that takes a list of users (after an optional leading argument) and
    /// answers how many it changed; nothing to do for no users.
    async fn for_users(
        &self,
        script: &Script,
        keys: &[&String],
        leading: Option<&str>,
        users: &[UserId],
    ) -> Result<u64, GateError> {
        if users.is_empty() {
            return Ok(0);
        }
        let users: Vec<i64> = users.iter().map(|u| u.get()).collect();
        let users = &users;
        self.run(|mut conn| async move {
            let mut invocation = script.prepare_invoke();
            for key in keys {
                invocation.key(*key);
            }
            if let Some(leading) = leading {
                invocation.arg(leading);
            }
            invocation.arg(users).invoke_async(&mut conn).await
        })
        .await
    }
}

fn parse_claim(coupon: CouponId, reply: &[String]) -> anyhow::Result<Claim> {
    let (finished, rest) = reply
        .split_first()
        .ok_or_else(|| anyhow!("empty claim reply"))?;
    if rest.len() % 3 != 0 {
        return Err(anyhow!("malformed claim reply {reply:?}"));
    }
    let winners = rest
        .chunks_exact(3)
        .map(|w| {
            Ok(Winner {
                coupon,
                user: w[0].parse().map_err(|e| anyhow!("{e}"))?,
                position: Position::new(parse_field(&w[1], "position")?)?,
                applied_at: micros_to_time(parse_field(&w[2], "score")?)?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Claim {
        winners,
        finished: finished == "1",
    })
}
