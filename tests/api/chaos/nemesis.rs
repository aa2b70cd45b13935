//! The nemesis: faults drawn from the seed, each injected and healed at its moment, with the
//! evidence that it happened (a fault that did nothing proves nothing).

use std::fmt;
use std::time::{Duration, Instant};

use super::rng::Rng;
use super::system::System;

/// Every kind of fault the nemesis knows. A new one is a variant here, its lane, its
/// duration, and its `inject`/`heal` arms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// SIGKILL and start again: the memory is gone unless the server has an AOF.
    RedisKill,
    /// Every key under the service's prefix deleted.
    Wipe,
    ScriptFlush,
    /// The broker link stalls (connections open, nothing passes).
    BrokerHold,
    /// The broker link dies (connections reset, new ones refused).
    BrokerCut,
    /// One service instance SIGKILLed, a new process started in its place.
    InstanceKill(usize),
}

impl FaultKind {
    pub const ALL: [FaultKind; 7] = [
        Self::RedisKill,
        Self::Wipe,
        Self::ScriptFlush,
        Self::BrokerHold,
        Self::BrokerCut,
        Self::InstanceKill(0),
        Self::InstanceKill(1),
    ];

    /// Faults on one lane never overlap (a wipe needs a Redis that is up).
    fn lane(self) -> usize {
        match self {
            Self::RedisKill | Self::Wipe | Self::ScriptFlush => 0,
            Self::BrokerHold | Self::BrokerCut => 1,
            Self::InstanceKill(i) => 2 + i,
        }
    }

    /// How long it lasts before it is healed; zero for a fault that is a single act.
    fn duration(self, rng: &mut Rng) -> Duration {
        match self {
            Self::RedisKill => rng.millis(200, 2_000),
            Self::Wipe | Self::ScriptFlush => Duration::ZERO,
            // Below the send timeout (`system::LEASE_MS`): sends stall, none times out.
            Self::BrokerHold => rng.millis(1_000, 6_000),
            Self::BrokerCut => rng.millis(500, 3_000),
            Self::InstanceKill(_) => rng.millis(1_000, 3_000),
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RedisKill => f.write_str("redis-kill"),
            Self::Wipe => f.write_str("wipe"),
            Self::ScriptFlush => f.write_str("script-flush"),
            Self::BrokerHold => f.write_str("broker-hold"),
            Self::BrokerCut => f.write_str("broker-cut"),
            Self::InstanceKill(i) => write!(f, "instance-kill({i})"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Fault {
    pub kind: FaultKind,
    /// Offsets from the start of the run.
    pub start: Duration,
    pub end: Duration,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (s, e) = (self.start.as_secs_f64(), self.end.as_secs_f64());
        write!(f, "{} {s:.1}s-{e:.1}s", self.kind)
    }
}

/// `count` faults inside `window`, healed at least a second before it ends; one that finds
/// no free place on its lane is dropped.
pub fn faults(rng: &mut Rng, count: usize, window: Duration) -> Vec<Fault> {
    let mut faults: Vec<Fault> = Vec::new();
    for _ in 0..count {
        let kind = FaultKind::ALL[rng.range(0, FaultKind::ALL.len() as u64 - 1) as usize];
        let length = kind.duration(rng);
        let latest = window.saturating_sub(length + Duration::from_secs(1));
        // Most faults land in the spike's first half, while the stock is still going.
        let latest = if rng.chance(60) {
            latest.min(window / 2)
        } else {
            latest
        };
        for _ in 0..20 {
            let start = rng.millis(500, latest.as_millis().max(500) as u64);
            let fault = Fault {
                kind,
                start,
                end: start + length,
            };
            let clear = |other: &Fault| {
                other.kind.lane() != kind.lane()
                    || fault.end + Duration::from_millis(300) < other.start
                    || other.end + Duration::from_millis(300) < fault.start
            };
            if faults.iter().all(clear) {
                faults.push(fault);
                break;
            }
        }
    }
    faults.sort_by_key(|f| f.start);
    faults
}

/// Runs the schedule's faults against `system`, each at its moment; returns what each did.
pub async fn run(faults: &[Fault], system: &mut System, origin: Instant) -> Vec<String> {
    let mut steps: Vec<(Duration, bool, Fault)> = faults
        .iter()
        .flat_map(|f| [(f.start, true, *f), (f.end, false, *f)])
        .collect();
    // Heals before injections at the same instant; stable otherwise.
    steps.sort_by_key(|(at, inject, _)| (*at, *inject));
    let mut evidence = Vec::new();
    for (at, inject, fault) in steps {
        // The schedule's own clock: these sleeps are the moments the seed chose.
        tokio::time::sleep_until((origin + at).into()).await;
        let what = if inject {
            self::inject(fault.kind, system).await
        } else {
            heal(fault.kind, system).await
        };
        if let Some(what) = what {
            let late = origin.elapsed().as_secs_f64();
            evidence.push(format!("+{late:.2}s {}: {what}", fault.kind));
        }
    }
    evidence
}

async fn inject(kind: FaultKind, system: &mut System) -> Option<String> {
    Some(match kind {
        FaultKind::RedisKill => {
            let keys = prefix_keys(system).await.len();
            system.redis.kill().await;
            format!("SIGKILLed Redis holding {keys} keys of the service")
        }
        FaultKind::Wipe => {
            let keys = prefix_keys(system).await;
            if !keys.is_empty() {
                let mut conn = system.redis.connection().await.unwrap();
                let _: () = redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
            let left = prefix_keys(system).await.len();
            format!("deleted {} keys, {left} left", keys.len())
        }
        FaultKind::ScriptFlush => {
            let mut conn = system.redis.connection().await.unwrap();
            let _: () = redis::cmd("SCRIPT")
                .arg("FLUSH")
                .query_async(&mut conn)
                .await
                .unwrap();
            "scripts flushed".into()
        }
        FaultKind::BrokerHold => {
            system.broker.proxy().hold();
            "broker link held".into()
        }
        FaultKind::BrokerCut => {
            system.broker.proxy().cut();
            "broker link cut".into()
        }
        FaultKind::InstanceKill(i) => {
            system.kill_instance(i).await;
            format!("instance {i} SIGKILLed")
        }
    })
}

async fn heal(kind: FaultKind, system: &mut System) -> Option<String> {
    match kind {
        FaultKind::RedisKill => {
            system.redis.restart().await;
            let keys = prefix_keys(system).await.len();
            Some(format!(
                "Redis started again with {keys} keys of the service"
            ))
        }
        FaultKind::Wipe | FaultKind::ScriptFlush => None,
        FaultKind::BrokerHold | FaultKind::BrokerCut => {
            system.broker.proxy().restore();
            Some("broker link restored".into())
        }
        FaultKind::InstanceKill(i) => {
            system.restart_instance(i).await;
            Some(format!("instance {i} started again"))
        }
    }
}

pub async fn prefix_keys(system: &System) -> Vec<String> {
    let mut conn = system.redis.connection().await.unwrap();
    let pattern = format!("{}:*", system.settings.redis.key_prefix);
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut conn)
        .await
        .unwrap()
}
