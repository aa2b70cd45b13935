//! The log in PostgreSQL: its head, leaves and stored hashes, and the proofs read from them.

use sqlx::{PgPool, Postgres, Transaction};
use tlog_tiles::Hash;

use super::tree::{needed, Known};
use crate::domain::CouponId;

/// An event's log as last signed.
#[derive(Debug, Clone)]
pub struct LogHead {
    pub size: u64,
    pub checkpoint: Option<String>,
    pub complete: bool,
}

/// The head's statement; public so that a test can count its executions on the wire.
pub const HEAD_SQL: &str =
    "SELECT size, checkpoint, complete FROM fairness_log WHERE coupon_id = $1";

pub async fn head(db: &PgPool, coupon: CouponId) -> sqlx::Result<Option<LogHead>> {
    let row: Option<(i64, Option<String>, bool)> = sqlx::query_as(HEAD_SQL)
        .bind(coupon.get())
        .fetch_optional(db)
        .await?;
    Ok(row.map(|(size, checkpoint, complete)| LogHead {
        size: size as u64,
        checkpoint,
        complete,
    }))
}

/// A stored leaf and the nonce that opens its commitment (private).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredLeaf {
    pub position: i32,
    pub leaf: Vec<u8>,
    pub nonce: Option<Vec<u8>>,
}

/// Leaves at positions `start..end` (1-based, end exclusive), in order.
pub async fn leaves(
    db: &PgPool,
    coupon: CouponId,
    start: u32,
    end: u32,
) -> sqlx::Result<Vec<StoredLeaf>> {
    sqlx::query_as(
        "SELECT position, leaf, nonce FROM fairness_leaf \
         WHERE coupon_id = $1 AND position >= $2 AND position < $3 ORDER BY position",
    )
    .bind(coupon.get())
    .bind(start as i64)
    .bind(end as i64)
    .fetch_all(db)
    .await
}

/// The statement a log copy grows by; public so that a test can count its executions.
pub const LEAF_BYTES_SQL: &str = "SELECT position, leaf FROM fairness_leaf \
     WHERE coupon_id = $1 AND position > $2 AND position <= $3 ORDER BY position";

/// Positions and bytes of the leaves after `after`, up to `upto`, in order.
pub async fn leaf_bytes(
    db: &PgPool,
    coupon: CouponId,
    after: u64,
    upto: u64,
) -> sqlx::Result<Vec<(i32, Vec<u8>)>> {
    sqlx::query_as(LEAF_BYTES_SQL)
        .bind(coupon.get())
        .bind(after as i64)
        .bind(upto as i64)
        .fetch_all(db)
        .await
}

/// Where a stored hash is kept: with the leaf whose append completed it (node `n` of level `l`
/// with leaf `((n + 1) << l) - 1`, 1-based position one more), at byte offset `32 l`.
fn place(index: u64) -> (i64, usize) {
    let (level, node) = tlog_tiles::split_stored_hash_index(index);
    let leaf = ((node + 1) << level) - 1;
    (leaf as i64 + 1, usize::from(level) * 32)
}

/// The hashes at `indexes`, out of the rows (position → stored hashes) that hold them.
fn known(indexes: &[u64], rows: &std::collections::HashMap<i64, Vec<u8>>) -> Known {
    Known(
        indexes
            .iter()
            .filter_map(|&index| {
                let (position, at) = place(index);
                let hash = rows.get(&position)?.get(at..at + 32)?;
                Some((index, Hash(hash.try_into().ok()?)))
            })
            .collect(),
    )
}

/// Stored hashes by index, from the pool or inside a transaction.
pub async fn read_hashes<'e, E>(db: E, coupon: CouponId, indexes: &[u64]) -> sqlx::Result<Known>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let rows: Vec<(i32, Vec<u8>)> = sqlx::query_as(
        "SELECT position, hashes FROM fairness_leaf WHERE coupon_id = $1 AND position = ANY($2)",
    )
    .bind(coupon.get())
    .bind(indexes.iter().map(|&i| place(i).0).collect::<Vec<_>>())
    .fetch_all(db)
    .await?;
    let rows = rows.into_iter().map(|(p, h)| (i64::from(p), h)).collect();
    Ok(known(indexes, &rows))
}

/// The leaf at `position` and its inclusion proof in the tree of `size` leaves, in one query
/// (a winner's receipt, asked for by everyone polling their position).
pub async fn leaf_with_proof(
    db: &PgPool,
    coupon: CouponId,
    position: u32,
    size: u64,
) -> Result<Option<(StoredLeaf, Vec<Hash>)>, ProofError> {
    let index = u64::from(position).saturating_sub(1);
    let indexes = needed(|r| tlog_tiles::prove_record(size, index, r))
        .map_err(|e| ProofError::OutOfRange(e.to_string()))?;
    let mut positions: Vec<i64> = indexes.iter().map(|&i| place(i).0).collect();
    positions.push(i64::from(position));
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        leaf: StoredLeaf,
        hashes: Vec<u8>,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT position, leaf, nonce, hashes FROM fairness_leaf \
         WHERE coupon_id = $1 AND position = ANY($2)",
    )
    .bind(coupon.get())
    .bind(positions)
    .fetch_all(db)
    .await?;
    let mut leaf = None;
    let mut hashes = std::collections::HashMap::new();
    for row in rows {
        hashes.insert(i64::from(row.leaf.position), row.hashes);
        if row.leaf.position as u32 == position {
            leaf = Some(row.leaf);
        }
    }
    let Some(leaf) = leaf else { return Ok(None) };
    let proof = tlog_tiles::prove_record(size, index, &known(&indexes, &hashes))
        .map_err(ProofError::Tree)?;
    Ok(Some((leaf, proof)))
}

/// Why a proof cannot be given.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// The sizes asked for do not fit the log (beyond its size, or not ordered).
    #[error("{0}")]
    OutOfRange(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("the stored tree is inconsistent: {0}")]
    Tree(tlog_tiles::Error),
}

async fn prove<T>(
    db: &PgPool,
    coupon: CouponId,
    compute: impl Fn(Dyn) -> Result<T, tlog_tiles::Error>,
) -> Result<T, ProofError> {
    let indexes = needed(|r| compute(Dyn(r))).map_err(|e| ProofError::OutOfRange(e.to_string()))?;
    let known = read_hashes(db, coupon, &indexes).await?;
    compute(Dyn(&known)).map_err(ProofError::Tree)
}

/// `tlog_tiles` takes a sized reader; both passes go through one closure over this.
pub struct Dyn<'a>(&'a dyn tlog_tiles::HashReader);

impl tlog_tiles::HashReader for Dyn<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        self.0.read_hashes(indexes)
    }
}

fn within(size: u64, head: u64) -> Result<(), ProofError> {
    if size > head {
        return Err(ProofError::OutOfRange(format!(
            "the log has {head} leaves, not {size}"
        )));
    }
    Ok(())
}

/// Whether an inclusion proof of `position` in the tree of `size` can be given by a log of
/// `head` leaves.
pub fn inclusion_range(position: u64, size: u64, head: u64) -> Result<(), ProofError> {
    within(size, head)?;
    if position == 0 || position > size {
        return Err(ProofError::OutOfRange(format!(
            "position must be 1 to {size}, the tree's size"
        )));
    }
    Ok(())
}

/// Whether a consistency proof from `from` to `to` can be given by a log of `head` leaves.
pub fn consistency_range(from: u64, to: u64, head: u64) -> Result<(), ProofError> {
    within(to, head)?;
    if from == 0 || from > to {
        return Err(ProofError::OutOfRange(format!(
            "from must be 1 to {to} (to)"
        )));
    }
    Ok(())
}

/// RFC 6962 inclusion proof of `position`'s leaf in the tree of `size` leaves.
pub async fn inclusion(
    db: &PgPool,
    coupon: CouponId,
    position: u64,
    size: u64,
    head: u64,
) -> Result<Vec<Hash>, ProofError> {
    inclusion_range(position, size, head)?;
    prove(db, coupon, |r| {
        tlog_tiles::prove_record(size, position - 1, &r)
    })
    .await
}

/// RFC 6962 consistency proof from the tree of `from` leaves to the tree of `to`.
pub async fn consistency(
    db: &PgPool,
    coupon: CouponId,
    from: u64,
    to: u64,
    head: u64,
) -> Result<Vec<Hash>, ProofError> {
    consistency_range(from, to, head)?;
    prove(db, coupon, |r| tlog_tiles::prove_tree(to, from, &r)).await
}

/// A leaf about to be appended: its position, bytes, private nonce (none for LOST), and the
/// stored hashes its append completes (filled in last).
pub struct NewLeaf {
    pub position: u32,
    pub bytes: [u8; super::LEAF_BYTES],
    pub nonce: Option<[u8; super::NONCE_BYTES]>,
    pub hashes: Vec<u8>,
}

impl NewLeaf {
    pub fn new(
        position: u32,
        bytes: [u8; super::LEAF_BYTES],
        nonce: Option<[u8; super::NONCE_BYTES]>,
    ) -> Self {
        Self {
            position,
            bytes,
            nonce,
            hashes: Vec::with_capacity(64),
        }
    }
}

/// What one append writes, in the builder's transaction.
pub struct Appended<'a> {
    pub coupon: CouponId,
    pub leaves: &'a [NewLeaf],
    pub size: u64,
    pub root: Hash,
    pub checkpoint: &'a str,
    pub complete: bool,
}

pub async fn append(tx: &mut Transaction<'_, Postgres>, a: &Appended<'_>) -> sqlx::Result<()> {
    let id = a.coupon.get();
    sqlx::query(
        "INSERT INTO fairness_leaf (coupon_id, position, leaf, nonce, hashes) \
         SELECT $1, * FROM UNNEST($2::int[], $3::bytea[], $4::bytea[], $5::bytea[])",
    )
    .bind(id)
    .bind(
        a.leaves
            .iter()
            .map(|l| l.position as i32)
            .collect::<Vec<_>>(),
    )
    .bind(
        a.leaves
            .iter()
            .map(|l| l.bytes.to_vec())
            .collect::<Vec<_>>(),
    )
    .bind(
        a.leaves
            .iter()
            .map(|l| l.nonce.map(|n| n.to_vec()))
            .collect::<Vec<_>>(),
    )
    .bind(
        a.leaves
            .iter()
            .map(|l| l.hashes.as_slice())
            .collect::<Vec<_>>(),
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE fairness_log SET size = $2, root = $3, checkpoint = $4, complete = $5, \
         signed_at = now() WHERE coupon_id = $1",
    )
    .bind(id)
    .bind(a.size as i64)
    .bind(a.root.0.to_vec())
    .bind(a.checkpoint)
    .bind(a.complete)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
