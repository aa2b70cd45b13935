//! Public endpoints that anyone may poll, served from a copy at most [`FRESH_FOR`] old and
//! refreshed by one request at a time: however many anonymous clients ask (a crowd waiting for
//! a drop polls them all), the backends see at most one read per second per instance and key.
//! `GET /coupons` (PostgreSQL), `GET /health/ready` (Redis, PostgreSQL, the broker) and
//! `GET /coupons/{id}/stats` (Redis) are served this way.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// One value.
pub struct Fresh<T> {
    /// Held while a refresh runs: the others wait for its result instead of reading too.
    copy: Mutex<Option<(Instant, Arc<T>)>>,
}

impl<T> Default for Fresh<T> {
    fn default() -> Self {
        Self {
            copy: Mutex::default(),
        }
    }
}

impl<T> Fresh<T> {
    /// The cached value, or `load`'s when it is older than [`FRESH_FOR`]. An error is not kept:
    /// the next caller tries again.
    pub async fn get<E, F, Fut>(&self, load: F) -> Result<Arc<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut copy = self.copy.lock().await;
        if let Some((at, value)) = copy.as_ref() {
            if at.elapsed() < FRESH_FOR {
                return Ok(value.clone());
            }
        }
        let value = Arc::new(load().await?);
        *copy = Some((Instant::now(), value.clone()));
        Ok(value)
    }

    /// Forgets the copy: an event was just created here, and its creator expects to see it.
    pub async fn invalidate(&self) {
        *self.copy.lock().await = None;
    }
}

/// One value per key (an event's stats). Bounded: made-up keys cannot grow it without limit.
pub struct FreshByKey<K, T> {
    copies: std::sync::Mutex<HashMap<K, Arc<Fresh<T>>>>,
}

/// Keys kept at most; past it the map starts over (a copy is only a second's worth anyway).
const MAX_KEYS: usize = 4096;

impl<K, T> Default for FreshByKey<K, T> {
    fn default() -> Self {
        Self {
            copies: std::sync::Mutex::default(),
        }
    }
}

impl<K: Hash + Eq + Copy, T> FreshByKey<K, T> {
    pub async fn get<E, F, Fut>(&self, key: K, load: F) -> Result<Arc<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let fresh = {
            let mut copies = self.copies.lock().unwrap_or_else(|p| p.into_inner());
            if copies.len() >= MAX_KEYS && !copies.contains_key(&key) {
                copies.clear();
            }
            copies.entry(key).or_default().clone()
        };
        fresh.get(load).await
    }
}
