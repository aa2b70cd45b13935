//! What the fairness log's anonymous readers cost PostgreSQL, bounded. They read through a
//! small pool of their own, so a crowd of them waits there (and is told 503 past a deadline)
//! and never for a connection `POST /coupons`, the user pages or receipts need. Leaves and
//! proofs come from an in-memory copy of each log: a log only grows, so the copy is read
//! once and then grown by the leaves appended since, at most once per head (a second).

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use base64::prelude::{Engine, BASE64_STANDARD};
use sqlx::PgPool;

use super::problem::{ApiError, ErrorCode};
use super::FreshByKey;
use crate::domain::CouponId;
use crate::fairness::store::{self, LogHead};
use crate::fairness::LogCopy;

/// How long a reader's statement may run, and how long it waits for one of the pool's
/// connections.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// PostgreSQL's `query_canceled`: a statement that ran past [`QUERY_TIMEOUT`].
pub const QUERY_CANCELED: &str = "57014";
/// How long a reader waits in all (for the head, for another reader's load, for a
/// connection) before it is told 503: waiters hold no connection, but a client should not
/// hang while PostgreSQL is slow.
const READ_DEADLINE: Duration = Duration::from_secs(3);

/// Memory the copies may take together; the least used event is dropped past it.
const COPY_BYTES: u64 = 128 << 20;
/// A larger log is not copied (a few could fill [`COPY_BYTES`]): it is read per request, still
/// through the readers' pool.
pub const MAX_COPY_LEAVES: u64 = 500_000;

pub struct LogReads {
    /// The readers' own pool; its acquire timeout is how long a reader waits for it.
    db: PgPool,
    copies: moka::sync::Cache<CouponId, Arc<EventLog>>,
    /// Each event's batch window, for the empty checkpoint signed before the first append.
    windows: FreshByKey<CouponId, u32>,
}

/// One event's copy.
#[derive(Default)]
struct EventLog {
    /// Held while the copy grows: one reader reads PostgreSQL, the others wait for its copy.
    growing: tokio::sync::Mutex<()>,
    /// Locked only to swap or clone the `Arc`, never across an await.
    copy: Mutex<Arc<LogCopy>>,
    /// The copy's size in bytes, for the cache's bound.
    bytes: AtomicU32,
}

impl EventLog {
    fn current(&self) -> Arc<LogCopy> {
        self.copy.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Why a copy cannot be given.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Inconsistent(#[from] anyhow::Error),
}

impl LogReads {
    pub fn new(db: PgPool) -> Self {
        Self {
            db,
            copies: moka::sync::Cache::builder()
                .max_capacity(COPY_BYTES)
                .weigher(|_, log: &Arc<EventLog>| log.bytes.load(Ordering::Relaxed).max(1))
                .build(),
            windows: FreshByKey::default(),
        }
    }

    pub fn db(&self) -> &PgPool {
        &self.db
    }

    /// The event's batch window, at most a second old; `None` for an unknown event.
    pub async fn window(&self, coupon: CouponId) -> sqlx::Result<Option<u32>> {
        let window = self
            .windows
            .get(coupon, || crate::store::batch_window_us(&self.db, coupon));
        Ok(*window.await?)
    }

    /// The event's log in memory at exactly `head`'s size, checked against its signed root;
    /// `None` for a log too large to copy.
    pub async fn copy(
        &self,
        coupon: CouponId,
        head: &LogHead,
    ) -> Result<Option<Arc<LogCopy>>, ReadError> {
        if head.size > MAX_COPY_LEAVES {
            return Ok(None);
        }
        let log = self.copies.get_with(coupon, Arc::default);
        if let Some(copy) = matching(&log.current(), head)? {
            return Ok(Some(copy));
        }
        let _growing = log.growing.lock().await;
        let current = log.current();
        if let Some(copy) = matching(&current, head)? {
            return Ok(Some(copy));
        }
        // Grown from what is held, unless the log shrank or was rewritten under it.
        let grown = match self.grow(coupon, &current, head).await? {
            Some(grown) if matching(&grown, head)?.is_some() => grown,
            _ if current.size() == 0 => return Err(unsigned(coupon, head)),
            _ => match self.grow(coupon, &LogCopy::default(), head).await? {
                Some(fresh) if matching(&fresh, head)?.is_some() => fresh,
                _ => return Err(unsigned(coupon, head)),
            },
        };
        *log.copy.lock().unwrap_or_else(|p| p.into_inner()) = grown.clone();
        log.bytes.store(
            u32::try_from(grown.bytes()).unwrap_or(u32::MAX),
            Ordering::Relaxed,
        );
        // Inserted again so that the cache weighs it anew.
        self.copies.insert(coupon, log.clone());
        Ok(Some(grown))
    }

    /// `from` and the leaves after it up to `head`'s size; `None` when `from` is larger.
    async fn grow(
        &self,
        coupon: CouponId,
        from: &LogCopy,
        head: &LogHead,
    ) -> Result<Option<Arc<LogCopy>>, ReadError> {
        if from.size() > head.size {
            return Ok(None);
        }
        let rows = store::leaf_bytes(&self.db, coupon, from.size(), head.size).await?;
        let mut grown = from.clone();
        let pushed = tokio::task::spawn_blocking(move || {
            for (position, leaf) in rows {
                anyhow::ensure!(
                    u64::try_from(position).ok() == Some(grown.size() + 1),
                    "{coupon}'s log has position {position} where {} belongs",
                    grown.size() + 1
                );
                grown.push(&leaf)?;
            }
            Ok(grown)
        });
        let grown = pushed.await.context("building a log copy")??;
        Ok(Some(Arc::new(grown)))
    }
}

fn unsigned(coupon: CouponId, head: &LogHead) -> ReadError {
    anyhow::anyhow!(
        "the leaves of {coupon}'s log do not hash to its signed root at size {}",
        head.size
    )
    .into()
}

/// `copy` when it is the log `head` signed: the same size and root.
fn matching(copy: &Arc<LogCopy>, head: &LogHead) -> anyhow::Result<Option<Arc<LogCopy>>> {
    if copy.size() != head.size {
        return Ok(None);
    }
    let signed = head.checkpoint.as_deref().and_then(|c| c.lines().nth(2));
    let root = BASE64_STANDARD.encode(copy.root().context("a log copy's root")?.0);
    Ok((signed == Some(root.as_str())).then(|| copy.clone()))
}

/// `read`'s outcome, or 503 past [`READ_DEADLINE`].
pub async fn within_deadline<T, const C: u32>(
    read: impl Future<Output = T>,
) -> Result<T, ApiError<C>> {
    tokio::time::timeout(READ_DEADLINE, read)
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::Unavailable,
                "Too many readers of the fairness log right now; nothing was changed. Try again \
             shortly.",
            )
        })
}
