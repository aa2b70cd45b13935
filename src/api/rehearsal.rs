//! Rehearsal events: a drop rehearsed on the real deployment (`fcfs-bench rehearse`). Only
//! rehearsal users' tokens (`APP_AUTH__REHEARSAL_SECRET`, see `crate::auth`) may apply to them
//! or read a position in them, and those tokens are good for nothing else: a rehearsal user
//! may share an id with a real user, so on a real event their token would read that user's
//! place. Real users' tokens are not refused on a rehearsal (the event is not listed, and its
//! rows never show among a real user's coupons).

use std::collections::HashMap;
use std::sync::Mutex;

use sqlx::PgPool;

use super::problem::{ApiError, ErrorCode};
use crate::auth::Caller;
use crate::domain::CouponId;
use crate::store;

/// Which events are rehearsals, as far as this instance has had to ask. The flag never
/// changes, so an answer is kept for good; only rehearsal users' calls ask, so a real crowd's
/// applications never reach PostgreSQL for it.
#[derive(Default)]
pub struct Rehearsals {
    known: Mutex<HashMap<CouponId, bool>>,
}

impl Rehearsals {
    /// Refuses a rehearsal user's call on a real event (403); anything else passes, an
    /// unknown event to the handler's own 404.
    pub async fn check<const C: u32>(
        &self,
        db: &PgPool,
        caller: &Caller,
        coupon: CouponId,
    ) -> Result<(), ApiError<C>> {
        if !caller.rehearsal {
            return Ok(());
        }
        let known = self
            .known
            .lock()
            .expect("rehearsals lock")
            .get(&coupon)
            .copied();
        let rehearsal = match known {
            Some(flag) => Some(flag),
            None => {
                let flag = store::is_rehearsal(db, coupon).await?;
                if let Some(flag) = flag {
                    self.known
                        .lock()
                        .expect("rehearsals lock")
                        .insert(coupon, flag);
                }
                flag
            }
        };
        match rehearsal {
            Some(false) => Err(ApiError::new(
                ErrorCode::Forbidden,
                "A rehearsal token is accepted only for rehearsal events.",
            )),
            _ => Ok(()),
        }
    }

    /// Remembers an event this instance created.
    pub fn note(&self, coupon: CouponId, rehearsal: bool) {
        self.known
            .lock()
            .expect("rehearsals lock")
            .insert(coupon, rehearsal);
    }
}
