//! Redis connections shared by every request.
//!
//! A multiplexed connection pipelines the commands of concurrent requests on one socket, so a
//! spike of N applies costs Redis a few reads and writes per batch instead of N round trips.
//! Taking a pooled connection per request would also cost a recycle check (`UNWATCH` + `PING`,
//! another round trip) every time: measured, it doubled Redis' work per apply. So the gate keeps
//! a few connections and clones them. They are opened from a deadpool pool (one server, which
//! bounds their creation) or through the sentinels (who name the current master, so a
//! connection reopened after a failover reaches the new one).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;
use deadpool_redis::{Connection, Pool};
use redis::aio::MultiplexedConnection;
use redis::sentinel::SentinelClient;
use tokio::sync::Mutex;

/// Where new connections come from.
pub enum Connector {
    Server(Pool),
    /// One server over TLS (`rediss://`), trusting the configured CA.
    Tls(Box<redis::Client>),
    Sentinel(Box<Mutex<SentinelClient>>),
}

impl Connector {
    async fn open(&self) -> anyhow::Result<MultiplexedConnection> {
        match self {
            Connector::Server(pool) => Ok(Connection::take(
                pool.get().await.context("no Redis connection")?,
            )),
            Connector::Tls(client) => client
                .get_multiplexed_async_connection()
                .await
                .context("no Redis connection over TLS"),
            Connector::Sentinel(client) => client
                .lock()
                .await
                .get_async_connection()
                .await
                .context("no Redis master from the sentinels"),
        }
    }
}

pub struct Connections {
    connector: Arc<Connector>,
    /// A connection per slot once opened; `None` after a failure, reopened on next use. The lock
    /// is held only while opening, so one slot never opens two connections at once.
    slots: Vec<Mutex<Option<MultiplexedConnection>>>,
    next: AtomicUsize,
}

impl Connections {
    pub fn new(connector: Arc<Connector>, slots: usize) -> Self {
        Self {
            connector,
            slots: (0..slots.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// A connection (cheap clone of a shared one) and its slot, for `discard`.
    pub async fn get(&self) -> anyhow::Result<(usize, MultiplexedConnection)> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        self.get_at(slot).await
    }

    /// The connection of one slot, opened if needed: a retry after `discard` uses the slot it
    /// just emptied, so it gets a fresh connection rather than another slot's stale one.
    pub async fn get_at(&self, slot: usize) -> anyhow::Result<(usize, MultiplexedConnection)> {
        let mut held = self.slots[slot].lock().await;
        if let Some(conn) = held.as_ref() {
            return Ok((slot, conn.clone()));
        }
        let conn = self.connector.open().await?;
        *held = Some(conn.clone());
        Ok((slot, conn))
    }

    /// Forgets a connection that failed, so the next use of its slot opens a new one.
    pub async fn discard(&self, slot: usize) {
        *self.slots[slot].lock().await = None;
    }
}
