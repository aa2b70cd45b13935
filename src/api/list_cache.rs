//! `GET /coupons` is public and reads PostgreSQL. Served from a copy at most [`FRESH_FOR`] old,
//! refreshed by one request at a time, so however many anonymous clients poll it, the database
//! sees at most one list query per second per instance.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::store::CouponSummary;

pub const FRESH_FOR: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct ListCache {
    /// Held while a refresh runs: the others wait for its result instead of querying too.
    copy: Mutex<Option<(Instant, Arc<Vec<CouponSummary>>)>>,
}

impl ListCache {
    /// The cached list, or `load`'s when it is older than [`FRESH_FOR`].
    pub async fn get<E, F, Fut>(&self, load: F) -> Result<Arc<Vec<CouponSummary>>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<CouponSummary>, E>>,
    {
        let mut copy = self.copy.lock().await;
        if let Some((at, list)) = copy.as_ref() {
            if at.elapsed() < FRESH_FOR {
                return Ok(list.clone());
            }
        }
        let list = Arc::new(load().await?);
        *copy = Some((Instant::now(), list.clone()));
        Ok(list)
    }

    /// Forgets the copy: an event was just created here, and its creator expects to see it.
    pub async fn invalidate(&self) {
        *self.copy.lock().await = None;
    }
}
