//! Rebuilding a held coupon's Redis state from PostgreSQL (restore.lua), retiring a finished
//! one (expire.lua), and bringing a new one in (`register`, `open`). See `crate::ops::reconcile`.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::{Gate, GateError, HoldId, Restoration};
use crate::domain::{Coupon, CouponId, PersistedWinner};

static RESTORE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("restore.lua")));
static EXPIRE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("expire.lua")));
/// Lifts a creation's hold (see `register`) if it is still that hold, and keeps the definition.
static OPEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('HGET', KEYS[1], 'recovering') == ARGV[1] then \
           redis.call('HDEL', KEYS[1], 'recovering') \
           redis.call('PERSIST', KEYS[1]) return 1 end return 0",
    )
});

/// The per-status counts of a coupon with no winners yet (see counts.lua; ISSUED's, `issued`,
/// reads as 0 while absent).
const COUNTS_FROM_ZERO: [(&str, u64); 3] = [
    ("count:ADMITTED", 0),
    ("count:PUBLISHED", 0),
    ("count:FAILED", 0),
];

/// How long the Redis copy of a creation that never committed lives (held, so it admits
/// nobody) before it expires by itself.
const UNCOMMITTED_TTL: Duration = Duration::from_secs(3600);

impl Gate {
    /// Writes a new coupon's Redis copy **held** and puts it on the issuer's registry, before
    /// its row is committed: a copy whose row never commits admits nobody and expires. The
    /// hold to lift with [`open`](Self::open) once the row is committed.
    pub async fn register(&self, coupon: &Coupon) -> Result<HoldId, GateError> {
        let keys = self.keys(coupon.id);
        let meta = &keys.meta;
        let fields = meta_fields(coupon);
        let fields = &fields;
        let hold = HoldId::new("creating");
        let id = &hold;
        self.run(|mut conn| async move {
            redis::pipe()
                .atomic()
                .cmd("HSET")
                .arg(meta)
                .arg(fields)
                .ignore()
                .hset(meta, "recovering", &id.0)
                .ignore()
                // Zero counts: their presence tells the scripts this coupon keeps them
                // (see counts.lua).
                .hset_multiple(meta, &COUNTS_FROM_ZERO)
                .ignore()
                .expire(meta, UNCOMMITTED_TTL.as_secs() as i64)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
        })
        .await?;
        self.enlist(coupon.id).await?;
        Ok(hold)
    }

    /// Lifts a new coupon's creation hold once its row is committed. If this fails the coupon
    /// stays held, and the watcher restores it (with no winners) like any held coupon.
    pub async fn open(&self, coupon: CouponId, hold: &HoldId) -> Result<(), GateError> {
        let meta = self.keys(coupon).meta;
        let meta = &meta;
        self.run(|mut conn| async move {
            OPEN.key(meta)
                .arg(&hold.0)
                .invoke_async::<()>(&mut conn)
                .await
        })
        .await?;
        self.remember([coupon]);
        Ok(())
    }

    /// Rebuilds a coupon held by `hold` from its persisted winners (ascending position) and what
    /// Redis still holds, keeping every position up to `spent` taken, and puts it back on the
    /// issuer's registry. `None` when it is no longer under that hold.
    pub async fn restore(
        &self,
        coupon: &Coupon,
        hold: &HoldId,
        spent: u32,
        winners: &[PersistedWinner],
    ) -> Result<Option<Restoration>, GateError> {
        let keys = self.keys(coupon.id);
        let keys = &keys;
        let fields = meta_fields(coupon);
        let fields = &fields;
        let outcome: Vec<i64> = self
            .run(|mut conn| async move {
                let mut invocation = RESTORE.prepare_invoke();
                invocation
                    .key(&keys.all()[..])
                    .arg(&hold.0)
                    .arg(spent)
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
        let count = |i: usize| outcome.get(i).and_then(|v| u64::try_from(*v).ok());
        let Some(persisted) = count(0) else {
            return Ok(None);
        };
        // If this is lost, the watcher's next look puts it back (see `ops::reconcile`).
        self.enlist(coupon.id).await?;
        Ok(Some(Restoration {
            persisted,
            requeued: count(1).unwrap_or_default(),
            dropped: count(2).unwrap_or_default(),
            lost: count(3).unwrap_or_default(),
        }))
    }

    /// Sets every key of a finished coupon to expire after `retention` and takes it off the
    /// issuer's registry, if Redis still has exactly `admitted` admissions and finds it finished
    /// by its own clock; its application count, or `None` when nothing changed.
    pub async fn expire(
        &self,
        coupon: CouponId,
        retention: Duration,
        admitted: u64,
    ) -> Result<Option<u64>, GateError> {
        let keys = self.keys(coupon);
        let keys = &keys;
        let applications: i64 = self
            .run(|mut conn| async move {
                EXPIRE
                    .key(&keys.all()[..])
                    .arg(retention.as_secs().max(1))
                    .arg(admitted)
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
