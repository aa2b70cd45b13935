//! Rebuilding a coupon's Redis state from PostgreSQL after Redis lost it (a restart without
//! persistence, a flushed database, deleted keys). See `crate::reconcile` for the procedure.

use std::sync::LazyLock;

use chrono::Utc;
use redis::Script;

use super::{Gate, GateError};
use crate::domain::{Coupon, CouponId, PersistedWinner};

static HOLD: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("hold.lua")));
static RESTORE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("restore.lua")));

/// Queue members standing for positions whose winner was lost (see restore.lua).
pub const LOST_PREFIX: &str = "~lost:";

impl Gate {
    /// The coupons among `coupons` whose state Redis does not hold (held ones included).
    pub async fn missing(&self, coupons: &[CouponId]) -> Result<Vec<CouponId>, GateError> {
        if coupons.is_empty() {
            return Ok(Vec::new());
        }
        let metas: Vec<String> = coupons.iter().map(|c| self.keys(*c).meta).collect();
        let metas = &metas;
        let present: Vec<bool> = self
            .run(|mut conn| async move {
                let mut pipe = redis::pipe();
                for meta in metas {
                    pipe.hexists(meta, "stock");
                }
                pipe.query_async(&mut conn).await
            })
            .await?;
        Ok(coupons
            .iter()
            .zip(present)
            .filter_map(|(c, present)| (!present).then_some(*c))
            .collect())
    }

    /// Stops admissions for a coupon whose state is missing; false when the state is there.
    pub async fn hold(&self, coupon: CouponId) -> Result<bool, GateError> {
        let meta = self.keys(coupon).meta;
        let meta = &meta;
        let now = Utc::now().timestamp_micros();
        let held: i64 = self
            .run(|mut conn| async move { HOLD.key(meta).arg(now).invoke_async(&mut conn).await })
            .await?;
        Ok(held == 1)
    }

    /// Rebuilds a held coupon from its persisted winners (ascending position) and puts it back
    /// on the issuer's registry. `None` when it was not held (another instance restored it).
    pub async fn restore(
        &self,
        coupon: &Coupon,
        winners: &[PersistedWinner],
    ) -> Result<Option<u64>, GateError> {
        let keys = self.keys(coupon.id);
        let keys = &keys;
        let fields = meta_fields(coupon);
        let fields = &fields;
        let restored: i64 = self
            .run(|mut conn| async move {
                let mut invocation = RESTORE.prepare_invoke();
                invocation
                    .key(&keys.meta)
                    .key(&keys.seq)
                    .key(&keys.queue)
                    .key(&keys.pending)
                    .key(&keys.inflight)
                    .key(&keys.status)
                    .arg(fields.len());
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
        if restored < 0 {
            return Ok(None);
        }
        self.enlist(coupon.id).await?;
        Ok(Some(restored as u64))
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
