//! Per-user and per-address token buckets for the apply route. Checked before the admission
//! script, so a limited request is not counted as an application and cannot take stock.
//! `APP_RATE_LIMIT__SCOPE=instance`: governor's keyed GCRA limiter in this instance's memory (a
//! limited request never reaches Redis); `shared`: the same algorithm in Redis
//! (`Gate::take_tokens`), one set of buckets for every instance.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::configuration::{RateLimitScope, RateLimitSettings};
use crate::domain::UserId;
use crate::gate::{Bucket, Gate, GateError};

/// How often idle buckets are dropped, so the maps hold recent clients only.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

pub struct ApplyLimiter {
    per_user: Option<DefaultKeyedRateLimiter<i64>>,
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
    /// Set when the buckets are shared: they live in Redis, and the maps above stay empty.
    shared: Option<Shared>,
}

struct Shared {
    gate: Gate,
    settings: RateLimitSettings,
}

/// Which bucket ran dry, and when the next application would be let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub by: LimitedBy,
    pub retry_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitedBy {
    User,
    Address,
}

impl ApplyLimiter {
    /// Buckets of `settings.scope`; shared ones are kept by `gate`'s Redis.
    pub fn new(settings: &RateLimitSettings, gate: &Gate) -> Self {
        if settings.scope == RateLimitScope::Shared {
            return Self {
                per_user: None,
                per_address: None,
                clock: DefaultClock::default(),
                shared: Some(Shared {
                    gate: gate.clone(),
                    settings: settings.clone(),
                }),
            };
        }
        Self::in_memory(settings)
    }

    fn in_memory(settings: &RateLimitSettings) -> Self {
        Self {
            per_user: quota(settings.per_user_per_sec, settings.per_user_burst)
                .map(RateLimiter::keyed),
            per_address: quota(settings.per_address_per_sec, settings.per_address_burst)
                .map(RateLimiter::keyed),
            clock: DefaultClock::default(),
            shared: None,
        }
    }

    /// Takes one token from the caller's address bucket, then from the user's. Fails only when
    /// the buckets are shared and Redis cannot be asked.
    pub async fn check(
        &self,
        user: UserId,
        address: Option<IpAddr>,
    ) -> Result<Result<(), Limited>, GateError> {
        match &self.shared {
            // Boxed: the apply handler's future is deep enough without this one inline.
            Some(shared) => Box::pin(shared.check(user, address)).await,
            None => Ok(self.check_here(user, address)),
        }
    }

    fn check_here(&self, user: UserId, address: Option<IpAddr>) -> Result<(), Limited> {
        if let (Some(limiter), Some(address)) = (&self.per_address, address) {
            limiter.check_key(&address).map_err(|not_until| Limited {
                by: LimitedBy::Address,
                retry_after: not_until.wait_time_from(self.clock.now()),
            })?;
        }
        if let Some(limiter) = &self.per_user {
            limiter
                .check_key(&user.get())
                .map_err(|not_until| Limited {
                    by: LimitedBy::User,
                    retry_after: not_until.wait_time_from(self.clock.now()),
                })?;
        }
        Ok(())
    }

    /// Forgets buckets that are full again (their clients went quiet).
    pub fn sweep(&self) {
        if let Some(limiter) = &self.per_address {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.per_user {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

impl Shared {
    async fn check(
        &self,
        user: UserId,
        address: Option<IpAddr>,
    ) -> Result<Result<(), Limited>, GateError> {
        let s = &self.settings;
        let mut buckets = Vec::with_capacity(2);
        let mut whose = Vec::with_capacity(2);
        if let (Some(address), true) = (address, s.per_address_per_sec > 0) {
            buckets.push(Bucket {
                name: format!("limit:address:{address}"),
                per_sec: s.per_address_per_sec,
                burst: s.per_address_burst,
            });
            whose.push(LimitedBy::Address);
        }
        if s.per_user_per_sec > 0 {
            buckets.push(Bucket {
                name: format!("limit:user:{user}"),
                per_sec: s.per_user_per_sec,
                burst: s.per_user_burst,
            });
            whose.push(LimitedBy::User);
        }
        Ok(match self.gate.take_tokens(&buckets).await? {
            None => Ok(()),
            Some((i, retry_after)) => Err(Limited {
                by: whose.get(i).copied().unwrap_or(LimitedBy::User),
                retry_after,
            }),
        })
    }
}

/// `None` when the rate is 0 (the limit is off); a burst below 1 means 1.
fn quota(per_sec: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(per_sec)?;
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Some(Quota::per_second(rate).allow_burst(burst))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(per_user: (u32, u32), per_address: (u32, u32)) -> RateLimitSettings {
        RateLimitSettings {
            per_user_per_sec: per_user.0,
            per_user_burst: per_user.1,
            per_address_per_sec: per_address.0,
            per_address_burst: per_address.1,
            scope: RateLimitScope::Instance,
        }
    }

    #[test]
    fn a_user_gets_the_burst_then_waits() {
        let limiter = ApplyLimiter::in_memory(&settings((1, 2), (0, 0)));
        let user = UserId::new(7).unwrap();
        assert!(limiter.check_here(user, None).is_ok());
        assert!(limiter.check_here(user, None).is_ok());
        let limited = limiter.check_here(user, None).unwrap_err();
        assert_eq!(limited.by, LimitedBy::User);
        assert!(
            limited.retry_after > Duration::ZERO && limited.retry_after <= Duration::from_secs(1)
        );
        // Another user has a bucket of their own.
        assert!(limiter.check_here(UserId::new(8).unwrap(), None).is_ok());
    }

    #[test]
    fn one_address_is_limited_across_users() {
        let limiter = ApplyLimiter::in_memory(&settings((0, 0), (1, 3)));
        let address: IpAddr = "203.0.113.9".parse().unwrap();
        for user in 1..=3 {
            assert!(limiter
                .check_here(UserId::new(user).unwrap(), Some(address))
                .is_ok());
        }
        let limited = limiter
            .check_here(UserId::new(4).unwrap(), Some(address))
            .unwrap_err();
        assert_eq!(limited.by, LimitedBy::Address);
        assert!(limiter
            .check_here(
                UserId::new(4).unwrap(),
                Some("203.0.113.10".parse().unwrap())
            )
            .is_ok());
    }

    #[test]
    fn a_zero_rate_turns_the_limit_off() {
        let limiter = ApplyLimiter::in_memory(&settings((0, 0), (0, 0)));
        let user = UserId::new(1).unwrap();
        for _ in 0..1_000 {
            assert!(limiter.check_here(user, None).is_ok());
        }
    }
}
