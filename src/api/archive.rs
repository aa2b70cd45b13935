//! Reads of events whose Redis copy was retired (`APP_REDIS__RETENTION_SECS`): the gate says
//! `Retired`, and the answer is built from PostgreSQL to match what Redis answered before.
//! Only finished events are retired, so this never runs during a spike.

use chrono::Utc;

use super::problem::ApiError;
use super::AppState;
use crate::domain::{CouponId, Status, UserId};
use crate::gate::{Admission, GateError, Snapshot, Ticket};
use crate::store::{self, Archived};

/// The coupon (and the user's ticket) from Redis, or from PostgreSQL once retired.
pub(super) async fn snapshot<const C: u32>(
    state: &AppState,
    id: CouponId,
    user: Option<UserId>,
) -> Result<Option<Snapshot>, ApiError<C>> {
    match state.gate.snapshot(id, user).await {
        Err(GateError::Retired) => Ok(archived(state, id, user).await?.map(|a| snapshot_of(&a))),
        other => Ok(other?),
    }
}

pub(super) async fn archived<const C: u32>(
    state: &AppState,
    id: CouponId,
    user: Option<UserId>,
) -> Result<Option<Archived>, ApiError<C>> {
    Ok(store::archived(&state.db, id, user).await?)
}

/// Every winner of a retired event is persisted: admitted == issued, each ticket ISSUED.
pub(super) fn snapshot_of(archived: &Archived) -> Snapshot {
    Snapshot {
        coupon: archived.coupon.clone(),
        admitted: archived.issued,
        issued: archived.issued,
        now: Utc::now(),
        ticket: archived.ticket.map(|(position, applied_at)| Ticket {
            position,
            applied_at,
            status: Status::Issued,
        }),
    }
}

/// What the gate answered a late application before the keys expired: the winner's ticket;
/// else closed when the window closed (the gate checks it before the stock), else sold out.
pub(super) fn admission_of(archived: &Archived) -> Admission {
    let snapshot = snapshot_of(archived);
    let stock = archived.coupon.stock.get();
    match snapshot.ticket {
        Some(ticket) => Admission::AlreadyAdmitted { ticket, stock },
        None if archived
            .coupon
            .window
            .closes_at()
            .is_some_and(|c| c <= snapshot.now) =>
        {
            Admission::Closed
        }
        None => Admission::SoldOut,
    }
}
