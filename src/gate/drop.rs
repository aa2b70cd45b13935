//! Deleting a rehearsal event's Redis copy (see drop.lua and `DELETE /coupons/{id}`).

use std::sync::LazyLock;

use redis::Script;

use super::{Gate, GateError};
use crate::domain::CouponId;

static DROP: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("drop.lua")));

impl Gate {
    /// Deletes the coupon's keys and takes it off the issuer's registry; `false` (nothing
    /// changed) while winners are pending or in flight, or it is held.
    pub async fn drop_event(&self, coupon: CouponId) -> Result<bool, GateError> {
        let keys = self.keys(coupon);
        let keys = &keys;
        let dropped: i64 = self
            .run(|mut conn| async move { DROP.key(&keys.all()[..]).invoke_async(&mut conn).await })
            .await?;
        if dropped == 1 {
            self.retire(coupon).await?;
            self.note_retired([coupon]);
        }
        Ok(dropped == 1)
    }

    /// Deletes every key of a coupon PostgreSQL no longer has (a rehearsal deleted while a
    /// look held it: the restore has nothing to restore from), and takes it off the registry.
    pub async fn delete_keys_of_deleted(&self, coupon: CouponId) -> Result<(), GateError> {
        let keys = self.keys(coupon);
        let keys = &keys;
        self.run(|mut conn| async move {
            redis::cmd("DEL")
                .arg(&keys.all()[..])
                .query_async::<()>(&mut conn)
                .await
        })
        .await?;
        self.retire(coupon).await?;
        self.forget([coupon]);
        Ok(())
    }
}
