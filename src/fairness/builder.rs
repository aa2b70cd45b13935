//! The log builder: appends each event's admissions to its log in position order, from the
//! persisted rows (and, for a position no row will ever fill, from the gate: a LOST placeholder
//! or a FAILED winner), and signs a checkpoint after every append. It runs with the consumer,
//! once a second; builders of several instances share the work through a row lock per event.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::leaf::{commitment, new_nonce, Leaf, LeafKind, NONCE_BYTES};
use super::store::{self, Appended, NewLeaf};
use super::tree::Known;
use super::LogKey;
use crate::domain::{CouponId, CouponState, Position, UserId};
use crate::gate::{Gate, GateError, Holder};

/// The most leaves one transaction appends; a longer backlog takes several in one tick.
const CHUNK: i64 = 5_000;

#[derive(Clone)]
pub struct LogBuilder {
    db: PgPool,
    gate: Gate,
    key: Arc<LogKey>,
    every: Duration,
}

impl LogBuilder {
    pub fn new(db: PgPool, gate: Gate, key: Arc<LogKey>, every: Duration) -> Self {
        Self {
            db,
            gate,
            key,
            every,
        }
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut every = tokio::time::interval(self.every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
            if let Err(e) = self.build_once().await {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "fairness log not extended this tick"
                );
            }
        }
    }

    /// Extends every unfinished log as far as it can; returns the leaves appended.
    pub async fn build_once(&self) -> anyhow::Result<u64> {
        let open: Vec<(i64,)> = sqlx::query_as(
            "SELECT c.id FROM coupon c LEFT JOIN fairness_log l ON l.coupon_id = c.id \
             WHERE NOT COALESCE(l.complete, false) ORDER BY c.id",
        )
        .fetch_all(&self.db)
        .await?;
        let mut appended = 0;
        for (id,) in open {
            let coupon = CouponId::new(id)?;
            loop {
                let n = self
                    .extend(coupon)
                    .await
                    .with_context(|| format!("extending coupon {coupon}'s log"))?;
                appended += n;
                if n < CHUNK as u64 {
                    break;
                }
            }
        }
        Ok(appended)
    }

    /// One append to one event's log, in one transaction. Returns the leaves appended.
    async fn extend(&self, coupon: CouponId) -> anyhow::Result<u64> {
        let mut tx = self.db.begin().await?;
        sqlx::query("INSERT INTO fairness_log (coupon_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(coupon.get())
            .execute(&mut *tx)
            .await?;
        // Another instance's builder holds it: that one appends.
        let Some((size, signed)): Option<(i64, bool)> = sqlx::query_as(
            "SELECT size, checkpoint IS NOT NULL FROM fairness_log WHERE coupon_id = $1 \
             FOR UPDATE SKIP LOCKED",
        )
        .bind(coupon.get())
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(0);
        };
        let size = size as u64;
        let rows: Vec<(i64, i32, DateTime<Utc>)> = sqlx::query_as(
            "SELECT user_id, position, applied_at FROM coupon_issue \
             WHERE coupon_id = $1 AND position > $2 ORDER BY position LIMIT $3",
        )
        .bind(coupon.get())
        .bind(size as i64)
        .bind(CHUNK)
        .fetch_all(&mut *tx)
        .await?;

        let mut new: Vec<NewLeaf> = Vec::new();
        let mut next = size + 1;
        let mut blocked = false;
        for (user, position, applied_at) in rows {
            while u64::from(position as u32) > next && !blocked {
                match self.gap(coupon, next).await? {
                    Some(leaf) => {
                        new.push(leaf);
                        next += 1;
                    }
                    None => blocked = true,
                }
            }
            if blocked {
                break;
            }
            let nonce = new_nonce();
            new.push(issued(coupon, position as u32, applied_at, user, nonce)?);
            next += 1;
        }
        // The rows ran out: the event may be over, with places at its end no row will fill.
        let mut complete = false;
        if !blocked && (new.len() as i64) < CHUNK {
            if let Some(handed_out) = self.handed_out_if_over(coupon).await? {
                while next <= handed_out {
                    match self.gap(coupon, next).await? {
                        Some(leaf) => {
                            new.push(leaf);
                            next += 1;
                        }
                        None => break,
                    }
                }
                complete = next > handed_out;
            }
        }
        // A new log's first, empty checkpoint is stored at once (the API signs the same note
        // for it until then).
        if new.is_empty() && !complete && signed {
            return Ok(0);
        }
        let root = self.hash(&mut tx, coupon, size, &mut new).await?;
        let new_size = size + new.len() as u64;
        let window = crate::store::batch_window_us(&mut *tx, coupon)
            .await?
            .unwrap_or_default();
        let checkpoint = self.key.sign(coupon, new_size, root, window)?;
        store::append(
            &mut tx,
            &Appended {
                coupon,
                leaves: &new,
                size: new_size,
                root,
                checkpoint: &checkpoint,
                complete,
            },
        )
        .await?;
        tx.commit().await?;
        if complete {
            tracing::info!(coupon_id = %coupon, size = new_size, "fairness log complete");
        }
        Ok(new.len() as u64)
    }

    /// Fills in each new leaf's stored hashes and returns the new root: the tree's right edge
    /// (the roots of the perfect subtrees that make up `size` leaves) is all an append reads of
    /// the old tree.
    async fn hash(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        coupon: CouponId,
        size: u64,
        new: &mut [NewLeaf],
    ) -> anyhow::Result<tlog_tiles::Hash> {
        let edge = tlog_tiles::sub_tree_index(0, size, vec![]);
        let mut known: Known = store::read_hashes(&mut **tx, coupon, &edge).await?;
        for (i, leaf) in new.iter_mut().enumerate() {
            let n = size + i as u64;
            let stored = tlog_tiles::stored_hashes(n, &leaf.bytes, &known)?;
            let first = tlog_tiles::stored_hash_index(0, n);
            for (j, hash) in stored.into_iter().enumerate() {
                known.0.insert(first + j as u64, hash);
                leaf.hashes.extend_from_slice(&hash.0);
            }
        }
        Ok(tlog_tiles::tree_hash(size + new.len() as u64, &known)?)
    }

    /// The leaf for a position no row holds, when the gate says none ever will: its winner was
    /// lost with Redis' memory, or FAILED. `None`: wait (the row is on its way).
    async fn gap(&self, coupon: CouponId, position: u64) -> anyhow::Result<Option<NewLeaf>> {
        let place = Position::new(u32::try_from(position)?)?;
        let holder = match self.gate.holder_at(coupon, place).await {
            Ok(holder) => holder,
            // Retired (every winner persisted) or held for a restore: nothing to add now.
            Err(GateError::Retired | GateError::Held) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(match holder {
            Some(Holder::Lost { score_us }) => {
                let leaf = Leaf {
                    kind: LeafKind::Lost,
                    coupon,
                    position: place,
                    arrived_us: score_us,
                    commitment: [0; 32],
                };
                Some(NewLeaf::new(place.get(), leaf.to_bytes(), None))
            }
            Some(Holder::Failed { user, score_us }) => {
                let nonce = new_nonce();
                let leaf = Leaf {
                    kind: LeafKind::Failed,
                    coupon,
                    position: place,
                    arrived_us: score_us,
                    commitment: commitment(&nonce, user),
                };
                Some(NewLeaf::new(place.get(), leaf.to_bytes(), Some(nonce)))
            }
            Some(Holder::Other) | None => None,
        })
    }

    /// How many places the event handed out, once it is over (sold out or closed); `None`
    /// while it runs.
    async fn handed_out_if_over(&self, coupon: CouponId) -> anyhow::Result<Option<u64>> {
        match self.gate.snapshot(coupon, None).await {
            Ok(Some(s)) if matches!(s.state(), CouponState::SoldOut | CouponState::Closed) => {
                Ok(Some(u64::from(s.admitted)))
            }
            Ok(_) | Err(GateError::Held) => Ok(None),
            // Retired: every winner is persisted, so the rows are all of it.
            Err(GateError::Retired) => {
                let (issued,): (i32,) =
                    sqlx::query_as("SELECT issued_count FROM coupon WHERE id = $1")
                        .bind(coupon.get())
                        .fetch_one(&self.db)
                        .await?;
                Ok(Some(issued as u64))
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn issued(
    coupon: CouponId,
    position: u32,
    applied_at: DateTime<Utc>,
    user: i64,
    nonce: [u8; NONCE_BYTES],
) -> anyhow::Result<NewLeaf> {
    let leaf = Leaf {
        kind: LeafKind::Issued,
        coupon,
        position: Position::new(position)?,
        arrived_us: applied_at.timestamp_micros(),
        commitment: commitment(&nonce, UserId::new(user)?),
    };
    Ok(NewLeaf::new(position, leaf.to_bytes(), Some(nonce)))
}
