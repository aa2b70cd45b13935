//! Rebuilding a coupon's Redis state from PostgreSQL after Redis lost or regressed it (a restart
//! without persistence, a failover that lost writes, deleted keys). See `crate::ops::reconcile`
//! for the procedure.

use std::sync::LazyLock;

use chrono::Utc;
use redis::Script;

use super::{CouponKeys, Gate, GateError};
use crate::domain::{Coupon, CouponId, PersistedWinner};

static HOLD: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("hold.lua")));
static RESTORE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("restore.lua")));
static EXPIRE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("expire.lua")));

/// Queue members standing for positions whose winner was lost (see restore.lua).
pub const LOST_PREFIX: &str = "~lost:";

/// How a coupon stands in Redis, as the watcher sees it (see `crate::ops::reconcile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The meta hash has the coupon's definition.
    pub present: bool,
    /// Held until restored.
    pub held: bool,
    /// Members of the queue (winners and lost placeholders): the highest position handed out.
    pub admitted: u64,
    /// Winners not yet published, and claimed but not acknowledged.
    pub pending: u64,
    pub inflight: u64,
}

/// What one look at Redis found.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// present, held, admitted, pending, inflight
type RawStanding = (bool, bool, u64, u64, u64);

impl From<RawStanding> for Standing {
    fn from((present, held, admitted, pending, inflight): RawStanding) -> Self {
        Standing {
            present,
            held,
            admitted,
            pending,
            inflight,
        }
    }
}

/// Adds the five reads of one coupon's standing (see [`RawStanding`]).
fn standing_pipe<'p>(pipe: &'p mut redis::Pipeline, k: &CouponKeys) -> &'p mut redis::Pipeline {
    pipe.hexists(&k.meta, "stock")
        .hexists(&k.meta, "recovering")
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
                    .chunks(5)
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
    /// changed server. True when the coupon is (now) held.
    pub async fn hold(&self, coupon: CouponId, reason: HoldReason) -> Result<bool, GateError> {
        let meta = self.keys(coupon).meta;
        let meta = &meta;
        let now = Utc::now().timestamp_micros();
        let force = u8::from(reason != HoldReason::Missing);
        let held: i64 = self
            .run(|mut conn| async move {
                HOLD.key(meta)
                    .arg(now)
                    .arg(force)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(held == 1)
    }

    /// Rebuilds a held coupon from its persisted winners (ascending position) and what Redis
    /// still holds, and puts it back on the issuer's registry. `None` when it was not held
    /// (another instance restored it).
    pub async fn restore(
        &self,
        coupon: &Coupon,
        winners: &[PersistedWinner],
    ) -> Result<Option<Restoration>, GateError> {
        let keys = self.keys(coupon.id);
        let keys = &keys;
        let fields = meta_fields(coupon);
        let fields = &fields;
        let outcome: Vec<i64> = self
            .run(|mut conn| async move {
                let mut invocation = RESTORE.prepare_invoke();
                invocation.key(&keys.all()[..]).arg(fields.len());
                for (name, value) in fields {
                    invocation.arg(*name).arg(value);
                }
                for w in winners {
                    invocation
                        .arg(w.position.get())
                        .arg(w.user.get())
                        .arg(w.applied_at.timestamp_micros());
                }
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        let count = |i: usize| outcome.get(i).and_then(|v| u64::try_from(*v).ok());
        let Some(persisted) = count(0) else {
            return Ok(None);
        };
        self.enlist(coupon.id).await?;
        Ok(Some(Restoration {
            persisted,
            requeued: count(1).unwrap_or_default(),
            dropped: count(2).unwrap_or_default(),
        }))
    }
}

impl Gate {
    /// Sets every key of a finished coupon to expire after `retention` and takes it off the
    /// issuer's registry; its application count, or `None` when work is still in the pipeline.
    pub async fn expire(
        &self,
        coupon: CouponId,
        retention: std::time::Duration,
    ) -> Result<Option<u64>, GateError> {
        let keys = self.keys(coupon);
        let keys = &keys;
        let applications: i64 = self
            .run(|mut conn| async move {
                EXPIRE
                    .key(&keys.all()[..])
                    .arg(retention.as_secs().max(1))
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let Ok(applications) = u64::try_from(applications) else {
            return Ok(None);
        };
        self.retire(coupon).await?;
        self.note_retired([coupon]);
        Ok(Some(applications))
    }
}

/// The meta hash's definition fields, as `register` writes them and `restore` rewrites them.
pub(super) fn meta_fields(coupon: &Coupon) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("stock", coupon.stock.get().to_string()),
        ("name", coupon.name.as_str().to_owned()),
        (
            "created_at_us",
            coupon.created_at.timestamp_micros().to_string(),
        ),
    ];
    if let Some(open) = coupon.window.opens_at() {
        fields.push(("opens_at_us", open.timestamp_micros().to_string()));
    }
    if let Some(close) = coupon.window.closes_at() {
        fields.push(("closes_at_us", close.timestamp_micros().to_string()));
    }
    fields
}
