//! Redis connections shared by every request.
//!
//! A multiplexed connection pipelines the commands of concurrent requests on one socket, so a
//! spike of N applies costs Redis a few reads and writes per batch instead of N round trips.
//! Taking a pooled connection per request would also cost a recycle check (`UNWATCH` + `PING`,
//! another round trip) every time: measured, it doubled Redis' work per apply. So the gate keeps
//! a few connections from the deadpool pool (which bounds their creation) and clones them.

use std::sync::atomic::{AtomicUsize, Ordering};

use deadpool_redis::{Connection, Pool, PoolError};
use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

pub struct Connections {
    pool: Pool,
    /// A connection per slot once opened; `None` after a failure, reopened on next use. The lock
    /// is held only while opening, so one slot never opens two connections at once.
    slots: Vec<Mutex<Option<MultiplexedConnection>>>,
    next: AtomicUsize,
}

impl Connections {
    pub fn new(pool: Pool, slots: usize) -> Self {
        Self {
            pool,
            slots: (0..slots.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// A connection (cheap clone of a shared one) and its slot, for `discard`.
    pub async fn get(&self) -> Result<(usize, MultiplexedConnection), PoolError> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut held = self.slots[slot].lock().await;
        if let Some(conn) = held.as_ref() {
            return Ok((slot, conn.clone()));
        }
        let conn = Connection::take(self.pool.get().await?);
        *held = Some(conn.clone());
        Ok((slot, conn))
    }

    /// Forgets a connection that failed, so the next use of its slot opens a new one.
    pub async fn discard(&self, slot: usize) {
        *self.slots[slot].lock().await = None;
    }
}
