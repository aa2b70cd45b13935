//! Seeing that Redis lost or regressed a coupon's state (a restart without persistence, a
//! failover that lost writes, deleted keys) and holding it; `rebuild` restores it. See
//! `crate::ops::reconcile` for the procedure.

use std::sync::LazyLock;

use chrono::Utc;
use redis::Script;

use super::{CouponKeys, Gate, GateError};
use crate::domain::CouponId;

static HOLD: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("hold.lua")));

/// Queue members standing for positions whose winner was lost (see restore.lua).
pub const LOST_PREFIX: &str = "~lost:";

/// How a coupon stands in Redis, as the watcher sees it (see `crate::ops::reconcile`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// The meta hash has the coupon's definition.
    pub present: bool,
    /// The hold it is under until restored (see hold.lua), if any.
    pub hold: Option<HoldId>,
    /// Members of the queue (winners and lost placeholders): the highest position handed out.
    pub admitted: u64,
    /// Of those, placeholders for positions whose winner Redis lost (see restore.lua).
    pub lost: u64,
    /// Winners not yet published, and claimed but not acknowledged.
    pub pending: u64,
    pub inflight: u64,
}

impl Standing {
    pub fn held(&self) -> bool {
        self.hold.is_some()
    }
}

/// One hold's identity (the `recovering` field): a restore lifts only the hold it waited for,
/// never a newer one placed after it started waiting.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HoldId(pub(super) String);

impl HoldId {
    /// A fresh identity: the instance's clock and a random part, unique across instances.
    pub(super) fn new(kind: &str) -> Self {
        let nonce: u64 = rand::random();
        Self(format!(
            "{kind}:{}:{nonce:016x}",
            Utc::now().timestamp_micros()
        ))
    }
}

impl std::fmt::Display for HoldId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What one look at Redis found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Survey {
    /// The server's identity (`run_id`): it changes when Redis restarts or fails over.
    pub server: String,
    pub coupons: Vec<Standing>,
}

/// Why a coupon is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldReason {
    /// Redis has no state for it.
    Missing,
    /// Redis has fewer admissions than PostgreSQL has positions: it lost writes.
    Regressed,
    /// Redis restarted or failed over: its last writes may be gone, not yet visible as a
    /// regression (published, not yet persisted).
    ServerChanged,
}

/// One restore's outcome (see restore.lua).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restoration {
    /// Persisted winners written back as ISSUED.
    pub persisted: u64,
    /// Winners only Redis held, kept at their place (pending again).
    pub requeued: u64,
    /// Winners only Redis held who no longer fit the stock after a regression.
    pub dropped: u64,
    /// Positions handed out whose winner nobody holds any more: kept spent.
    pub lost: u64,
}

/// (stock, recovering, lost), admitted, pending, inflight
type RawStanding = ((Option<String>, Option<String>, Option<u64>), u64, u64, u64);

/// How many reads [`standing_pipe`] adds.
const STANDING_READS: usize = 4;

impl From<RawStanding> for Standing {
    fn from(((stock, hold, lost), admitted, pending, inflight): RawStanding) -> Self {
        Standing {
            present: stock.is_some(),
            hold: hold.map(HoldId),
            admitted,
            lost: lost.unwrap_or_default(),
            pending,
            inflight,
        }
    }
}

/// Adds the reads of one coupon's standing (see [`RawStanding`]).
fn standing_pipe<'p>(pipe: &'p mut redis::Pipeline, k: &CouponKeys) -> &'p mut redis::Pipeline {
    pipe.cmd("HMGET")
        .arg(&k.meta)
        .arg(&["stock", "recovering", "lost"])
        .zcard(&k.queue)
        .llen(&k.pending)
        .zcard(&k.inflight)
}

impl Gate {
    /// The server's identity and each coupon's standing, in `coupons`' order: one round trip
    /// on one server; on a cluster, one per coupon (a pipeline's keys must share a slot) and
    /// one to every master.
    pub async fn survey(&self, coupons: &[CouponId]) -> Result<Survey, GateError> {
        if self.cluster {
            return self.survey_cluster(coupons).await;
        }
        let keys: Vec<CouponKeys> = coupons.iter().map(|c| self.keys(*c)).collect();
        let keys = &keys;
        let (info, standings): (String, Vec<RawStanding>) = self
            .run(|mut conn| async move {
                let mut pipe = redis::pipe();
                pipe.cmd("INFO").arg("server").arg("replication");
                for k in keys {
                    standing_pipe(&mut pipe, k);
                }
                let mut reply: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
                let info: String = redis::from_redis_value(reply.remove(0))?;
                // A connection left on a master that a failover demoted still reads; its
                // server identity would flip back and forth. Reconnect instead.
                if !info.lines().any(|line| line.trim() == "role:master") {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
                        "connected to a replica",
                    )));
                }
                let standings = reply
                    .chunks(STANDING_READS)
                    .map(|c| redis::from_redis_value(redis::Value::Array(c.to_vec())))
                    .collect::<Result<_, _>>()?;
                Ok((info, standings))
            })
            .await?;
        let server = info
            .lines()
            .find_map(|line| line.strip_prefix("run_id:"))
            .map(|id| id.trim().to_owned())
            .ok_or_else(|| GateError::Unexpected(anyhow::anyhow!("INFO server has no run_id")))?;
        Ok(Survey {
            server,
            coupons: standings.into_iter().map(Standing::from).collect(),
        })
    }

    /// The cluster's identity is every master's `run_id` by address: a master restarting or a
    /// replica taking over changes it, as a restart or failover changes one server's.
    async fn survey_cluster(&self, coupons: &[CouponId]) -> Result<Survey, GateError> {
        let masters: std::collections::BTreeMap<String, String> = self
            .run(|mut conn| async move {
                redis::cmd("INFO")
                    .arg("server")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let server = masters
            .iter()
            .map(|(address, info)| {
                let id = info
                    .lines()
                    .find_map(|line| line.strip_prefix("run_id:"))
                    .map(str::trim)
                    .unwrap_or_default();
                format!("{address}={id}")
            })
            .collect::<Vec<_>>()
            .join(",");
        let standings = futures::future::try_join_all(coupons.iter().map(|coupon| {
            let keys = self.keys(*coupon);
            async move {
                let keys = &keys;
                let raw: RawStanding = self
                    .run(|mut conn| async move {
                        standing_pipe(&mut redis::pipe(), keys)
                            .query_async(&mut conn)
                            .await
                    })
                    .await?;
                Ok::<_, GateError>(Standing::from(raw))
            }
        }))
        .await?;
        Ok(Survey {
            server,
            coupons: standings,
        })
    }

    /// Stops admissions and claims for a coupon until [`restore`](Self::restore) rebuilds it.
    /// A missing state is held whatever `reason`; a present one only for a regression or a
    /// changed server. The hold the coupon is (now) under, this one or an earlier one.
    pub async fn hold(
        &self,
        coupon: CouponId,
        reason: HoldReason,
    ) -> Result<Option<HoldId>, GateError> {
        let meta = self.keys(coupon).meta;
        let meta = &meta;
        let id = HoldId::new("lost");
        let id = &id;
        let force = u8::from(reason != HoldReason::Missing);
        let held: Option<String> = self
            .run(|mut conn| async move {
                HOLD.key(meta)
                    .arg(&id.0)
                    .arg(force)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(held.map(HoldId))
    }
}
