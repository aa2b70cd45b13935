//! The event as the public reads it: one copy per instance and event, at most a second old
//! (see `fresh`), whether Redis holds the event or it was retired to PostgreSQL. A crowd
//! refreshing the event page costs the event's Redis one read a second, whatever its size.

use std::sync::Arc;

use super::problem::ApiError;
use super::{archive, AppState};
use crate::domain::CouponId;
use crate::gate::Snapshot;

/// The event's snapshot (no user's ticket), or `None` for an event that does not exist.
pub(super) async fn snapshot<const C: u32>(
    state: &AppState,
    id: CouponId,
) -> Result<Arc<Option<Snapshot>>, ApiError<C>> {
    state
        .event_cache
        .get(id, || archive::snapshot(state, id, None))
        .await
}
