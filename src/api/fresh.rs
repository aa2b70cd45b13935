//! Public endpoints that anyone may poll, served from a copy at most [`FRESH_FOR`] old and
//! refreshed by one request at a time: however many anonymous clients ask (a crowd waiting for
//! a drop refreshes the event page), the backends see at most one read per second per instance
//! and key. `GET /coupons`, `GET /coupons/{id}` (a retired event's archive included),
//! `GET /coupons/{id}/stats`, the log's head and checkpoint, and `GET /health/ready` are served
//! this way.

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

    /// Whether the copy may still be served, or a refresh is running (which will make it so).
    fn in_use(&self) -> bool {
        match self.copy.try_lock() {
            Ok(copy) => copy
                .as_ref()
                .is_some_and(|(at, _)| at.elapsed() < FRESH_FOR),
            Err(_) => true,
        }
    }
}

/// One value per key (an event's view, stats, log head). Keys whose load finds nothing (an
/// unknown event) are remembered apart, as unknown for [`FRESH_FOR`], in a bounded set: made-up
/// ids cost one backend read per id and second, and can never push a real event's copy out.
pub struct FreshByKey<K, T> {
    known: std::sync::Mutex<HashMap<K, Arc<Fresh<Option<T>>>>>,
    unknown: std::sync::Mutex<HashMap<K, Instant>>,
}

/// Past this many known keys, copies nobody read for a second are dropped (they would be
/// reloaded anyway); a copy in use is never dropped. Known keys are events an admin created.
const MAX_KNOWN: usize = 65_536;
/// Unknown keys remembered at most; past it the expired ones go, then if need be all of them.
const MAX_UNKNOWN: usize = 4_096;

impl<K, T> Default for FreshByKey<K, T> {
    fn default() -> Self {
        Self {
            known: std::sync::Mutex::default(),
            unknown: std::sync::Mutex::default(),
        }
    }
}

impl<K: Hash + Eq + Copy, T> FreshByKey<K, T> {
    /// The key's copy, or `load`'s answer when it is older than [`FRESH_FOR`]; `None` is
    /// `load`'s "no such key", itself kept for [`FRESH_FOR`].
    pub async fn get<E, F, Fut>(&self, key: K, load: F) -> Result<Arc<Option<T>>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        if lock(&self.unknown)
            .get(&key)
            .is_some_and(|at| at.elapsed() < FRESH_FOR)
        {
            return Ok(Arc::new(None));
        }
        let Some(fresh) = self.entry(key) else {
            // Full of copies in use: serve this one uncached rather than grow.
            return Ok(Arc::new(load().await?));
        };
        let value = fresh.get(load).await?;
        if value.is_none() {
            let mut known = lock(&self.known);
            if known.get(&key).is_some_and(|f| Arc::ptr_eq(f, &fresh)) {
                known.remove(&key);
            }
            drop(known);
            self.remember_unknown(key);
        }
        Ok(value)
    }

    /// Forgets the key, known or unknown: its event was just created or deleted here, and
    /// whoever did it expects to see that at once.
    pub fn forget(&self, key: K) {
        lock(&self.known).remove(&key);
        lock(&self.unknown).remove(&key);
    }

    fn entry(&self, key: K) -> Option<Arc<Fresh<Option<T>>>> {
        let mut known = lock(&self.known);
        if let Some(fresh) = known.get(&key) {
            return Some(fresh.clone());
        }
        if known.len() >= MAX_KNOWN {
            known.retain(|_, fresh| fresh.in_use());
            if known.len() >= MAX_KNOWN {
                return None;
            }
        }
        Some(known.entry(key).or_default().clone())
    }

    fn remember_unknown(&self, key: K) {
        let mut unknown = lock(&self.unknown);
        if unknown.len() >= MAX_UNKNOWN {
            unknown.retain(|_, at| at.elapsed() < FRESH_FOR);
            if unknown.len() >= MAX_UNKNOWN {
                unknown.clear();
            }
        }
        unknown.insert(key, Instant::now());
    }

    /// How many real keys have a copy (for tests of the bound).
    #[cfg(test)]
    fn known_len(&self) -> usize {
        lock(&self.known).len()
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn made_up_keys_never_push_out_a_real_one_and_each_loads_once_a_second() {
        let cache: FreshByKey<u64, &str> = FreshByKey::default();
        let loads = AtomicUsize::new(0);
        let load = |key: u64| {
            loads.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, ()>((key == 0).then_some("real")) }
        };
        assert_eq!(*cache.get(0, || load(0)).await.unwrap(), Some("real"));
        for key in 1..=(3 * MAX_UNKNOWN as u64) {
            assert_eq!(*cache.get(key, || load(key)).await.unwrap(), None);
        }
        assert_eq!(cache.known_len(), 1, "made-up keys took a real key's room");
        let before = loads.load(Ordering::SeqCst);
        assert_eq!(*cache.get(0, || load(0)).await.unwrap(), Some("real"));
        let last = 3 * MAX_UNKNOWN as u64;
        assert_eq!(*cache.get(last, || load(last)).await.unwrap(), None);
        assert_eq!(loads.load(Ordering::SeqCst), before, "a copy was reloaded");

        // The behaviour under test is the copy's age running out.
        tokio::time::sleep(FRESH_FOR).await;
        cache.get(0, || load(0)).await.unwrap();
        cache.get(last, || load(last)).await.unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), before + 2);
    }

    #[tokio::test]
    async fn concurrent_readers_of_one_key_share_one_load() {
        let cache: FreshByKey<u64, u64> = FreshByKey::default();
        let loads = AtomicUsize::new(0);
        let reads = (0..100).map(|_| {
            cache.get(7, || async {
                loads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok::<_, ()>(Some(7))
            })
        });
        let answers = futures::future::join_all(reads).await;
        assert!(answers.iter().all(|a| **a.as_ref().unwrap() == Some(7)));
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }
}
