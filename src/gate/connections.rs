//! Redis connections shared by every request.
//!
//! A multiplexed connection pipelines the commands of concurrent requests on one socket, so a
//! spike of N applies costs Redis a few reads and writes per batch instead of N round trips.
//! Taking a pooled connection per request would also cost a recycle check (`UNWATCH` + `PING`,
//! another round trip) every time: measured, it doubled Redis' work per apply. So the gate keeps
//! a few connections and clones them. They are opened from a deadpool pool (one server, which
//! bounds their creation), through the sentinels (who name the current master, so a
//! connection reopened after a failover reaches the new one) or from a cluster client (whose
//! connection keeps one multiplexed socket per node, follows `MOVED`/`ASK` and refreshes the
//! slot map when the topology changes).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;
use deadpool_redis::{Connection, Pool};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::SentinelClient;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::Mutex;

/// One shared connection: to one server, or to a cluster (routed by each command's key).
#[derive(Clone)]
pub enum RedisConnection {
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Server(conn) => conn.req_packed_command(cmd),
            RedisConnection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Server(conn) => conn.req_packed_commands(pipeline, offset, count),
            RedisConnection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Server(conn) => conn.get_db(),
            RedisConnection::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Where new connections come from.
pub enum Connector {
    Server(Pool),
    /// One server over TLS (`rediss://`), trusting the configured CA.
    Tls(Box<redis::Client>),
    Sentinel(Box<Mutex<SentinelClient>>),
    Cluster(Box<ClusterClient>),
}

impl Connector {
    pub(super) async fn open(&self) -> anyhow::Result<RedisConnection> {
        let server = match self {
            Connector::Server(pool) => {
                Connection::take(pool.get().await.context("no Redis connection")?)
            }
            Connector::Tls(client) => client
                .get_multiplexed_async_connection()
                .await
                .context("no Redis connection over TLS")?,
            Connector::Sentinel(client) => client
                .lock()
                .await
                .get_async_connection()
                .await
                .context("no Redis master from the sentinels")?,
            Connector::Cluster(client) => {
                return Ok(RedisConnection::Cluster(
                    client
                        .get_async_connection()
                        .await
                        .context("no connection to the Redis cluster")?,
                ))
            }
        };
        Ok(RedisConnection::Server(server))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Connector::Cluster(_))
    }
}

pub struct Connections {
    connector: Arc<Connector>,
    /// A connection per slot once opened; `None` after a failure, reopened on next use. The lock
    /// is held only while opening, so one slot never opens two connections at once.
    slots: Vec<Mutex<Option<RedisConnection>>>,
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
    pub async fn get(&self) -> anyhow::Result<(usize, RedisConnection)> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        self.get_at(slot).await
    }

    /// The connection of one slot, opened if needed: a retry after `discard` uses the slot it
    /// just emptied, so it gets a fresh connection rather than another slot's stale one.
    pub async fn get_at(&self, slot: usize) -> anyhow::Result<(usize, RedisConnection)> {
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
