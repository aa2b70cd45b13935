//! The fairness log's public endpoints: the verifier key, each event's signed checkpoint, RFC
//! 6962 proofs and the leaves. Anyone may read them; none carries a user id.

use base64::prelude::{Engine, BASE64_STANDARD};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::log_reads::{within_deadline, ReadError};
use super::problem::{declared, ApiError, ErrorCode};
use super::{coupon_id, ApiTags, AppState};
use crate::domain::CouponId;
use crate::fairness::store::{self, LogHead, ProofError};
use crate::fairness::Leaf;

type LogError = ApiError<{ declared::LOG }>;
type KeyError = ApiError<{ declared::KEY }>;

/// The most leaves one `leaves` call returns.
const MAX_LEAVES: u32 = 1_000;

/// The head may have moved on a second later.
const FOR_A_SECOND: &str = "public, max-age=1";
/// Leaves and proofs within a size the log has reached: a log is only appended to.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

#[derive(ApiResponse)]
pub enum KeyResponse {
    /// The verifier key, in signed-note form: `<name>+<key id>+<base64 Ed25519 key>`.
    #[oai(status = 200)]
    Key(PlainText<String>),
}

#[derive(ApiResponse)]
pub enum CheckpointResponse {
    /// The latest signed checkpoint (c2sp.org/tlog-checkpoint): origin
    /// `<key name>/coupons/<id>`, tree size, base64 root, a blank line, the Ed25519 signature.
    #[oai(status = 200)]
    Checkpoint(
        PlainText<String>,
        /// `public, max-age=1`: the head as this instance saw it at most a second ago.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

/// An RFC 6962 proof: base64 SHA-256 hashes, from the leaf (or the smaller tree) up.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct ProofView {
    pub hashes: Vec<String>,
}

#[derive(ApiResponse)]
pub enum ProofResponse {
    /// The proof's hashes, in RFC 6962 order.
    #[oai(status = 200)]
    Proof(
        Json<ProofView>,
        /// `public, max-age=31536000, immutable`: a proof between sizes the log has reached
        /// never changes.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

/// One leaf: the canonical bytes that are hashed, and their fields decoded.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct LeafView {
    pub position: u32,
    /// ISSUED, LOST (Redis lost the admission; no one holds the place) or FAILED.
    pub kind: String,
    /// The gate's arrival time, µs since the Unix epoch by Redis' clock.
    pub arrived_at_us: i64,
    /// Hex SHA-256(nonce ‖ user id): opened only by the winner's receipt.
    pub commitment: String,
    /// Base64 of the leaf's canonical bytes (version 1, 54 bytes; see README).
    pub leaf: String,
}

impl LeafView {
    pub fn new(bytes: &[u8]) -> Result<Self, crate::fairness::BadLeaf> {
        let leaf = Leaf::from_bytes(bytes)?;
        Ok(Self {
            position: leaf.position.get(),
            kind: leaf.kind.name().into(),
            arrived_at_us: leaf.arrived_us,
            commitment: hex::encode(leaf.commitment),
            leaf: BASE64_STANDARD.encode(bytes),
        })
    }
}

#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct LeavesView {
    pub leaves: Vec<LeafView>,
}

#[derive(ApiResponse)]
pub enum LeavesResponse {
    /// The leaves, in position order (fewer past the log's end).
    #[oai(status = 200)]
    Leaves(
        Json<LeavesView>,
        /// `public, max-age=31536000, immutable` when every leaf asked for is in the log;
        /// `public, max-age=1` when the range goes past its end.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

pub struct FairnessApi;

#[OpenApi(tag = "ApiTags::Fairness")]
impl FairnessApi {
    /// The key every checkpoint is signed with: check checkpoints against it, and keep it.
    #[oai(
        path = "/fairness/key",
        method = "get",
        operation_id = "getFairnessKey"
    )]
    async fn key(&self, state: Data<&AppState>) -> Result<KeyResponse, KeyError> {
        let key = state.fairness.as_ref().ok_or_else(off)?;
        Ok(KeyResponse::Key(PlainText(key.verifier_key().to_owned())))
    }

    /// The event's latest signed checkpoint: its log's size and root, signed.
    #[oai(
        path = "/coupons/:couponId/log/checkpoint",
        method = "get",
        operation_id = "getLogCheckpoint"
    )]
    async fn checkpoint(
        &self,
        state: Data<&AppState>,
        /// The coupon event's id.
        #[oai(name = "couponId")]
        coupon: Path<i64>,
    ) -> Result<CheckpointResponse, LogError> {
        let (_, head) = head(&state, coupon.0).await?;
        Ok(CheckpointResponse::Checkpoint(
            PlainText(head.checkpoint.unwrap_or_default()),
            FOR_A_SECOND.into(),
        ))
    }

    /// Proof that the leaf at `position` is in the tree of `size` leaves (RFC 6962 audit
    /// path; the leaf index is `position - 1`).
    #[oai(
        path = "/coupons/:couponId/log/proof/inclusion",
        method = "get",
        operation_id = "getInclusionProof"
    )]
    async fn inclusion(
        &self,
        state: Data<&AppState>,
        /// The coupon event's id.
        #[oai(name = "couponId")]
        coupon: Path<i64>,
        /// The leaf's position, 1 to `size`.
        #[oai(validator(minimum(value = "1")))]
        position: Query<u64>,
        /// The tree's size, at most the log's (a checkpoint's size).
        #[oai(validator(minimum(value = "1")))]
        size: Query<u64>,
    ) -> Result<ProofResponse, LogError> {
        let (position, size) = (position.0, size.0);
        let (id, head) = head(&state, coupon.0).await?;
        store::inclusion_range(position, size, head.size).map_err(proof_error)?;
        let proof = match copy(&state, id, &head).await? {
            Some(copy) => copy.inclusion(position, size).map_err(ProofError::Tree),
            None => {
                let read = store::inclusion(state.log_reads.db(), id, position, size, head.size);
                within_deadline(read).await?
            }
        };
        proof_view(proof)
    }

    /// Proof that the tree of `from` leaves is a prefix of the tree of `to` leaves (RFC 6962
    /// consistency proof): the log was only appended to in between.
    #[oai(
        path = "/coupons/:couponId/log/proof/consistency",
        method = "get",
        operation_id = "getConsistencyProof"
    )]
    async fn consistency(
        &self,
        state: Data<&AppState>,
        /// The coupon event's id.
        #[oai(name = "couponId")]
        coupon: Path<i64>,
        /// The smaller tree's size, at least 1.
        #[oai(validator(minimum(value = "1")))]
        from: Query<u64>,
        /// The larger tree's size, at most the log's.
        #[oai(validator(minimum(value = "1")))]
        to: Query<u64>,
    ) -> Result<ProofResponse, LogError> {
        let (from, to) = (from.0, to.0);
        let (id, head) = head(&state, coupon.0).await?;
        store::consistency_range(from, to, head.size).map_err(proof_error)?;
        let proof = match copy(&state, id, &head).await? {
            Some(copy) => copy.consistency(from, to).map_err(ProofError::Tree),
            None => {
                let read = store::consistency(state.log_reads.db(), id, from, to, head.size);
                within_deadline(read).await?
            }
        };
        proof_view(proof)
    }

    /// The leaves at positions `start` to `end - 1` (at most 1000), in position order.
    #[oai(
        path = "/coupons/:couponId/log/leaves",
        method = "get",
        operation_id = "listLogLeaves"
    )]
    async fn leaves(
        &self,
        state: Data<&AppState>,
        /// The coupon event's id.
        #[oai(name = "couponId")]
        coupon: Path<i64>,
        /// The first position, from 1.
        #[oai(validator(minimum(value = "1")))]
        start: Query<u32>,
        /// One past the last position; at most `start + 1000`.
        #[oai(validator(minimum(value = "2")))]
        end: Query<u32>,
    ) -> Result<LeavesResponse, LogError> {
        let (start, end) = (start.0, end.0);
        if end <= start || end - start > MAX_LEAVES {
            return Err(LogError::invalid(format!(
                "end must be after start, by at most {MAX_LEAVES}"
            )));
        }
        let (id, head) = head(&state, coupon.0).await?;
        let whole = u64::from(end) <= head.size + 1;
        let end = end.min(u32::try_from(head.size + 1).unwrap_or(u32::MAX));
        let leaves = if start >= end {
            Ok(vec![])
        } else if let Some(copy) = copy(&state, id, &head).await? {
            copy.leaves(start, end)
                .iter()
                .map(|l| LeafView::new(l))
                .collect()
        } else {
            let read = store::leaves(state.log_reads.db(), id, start, end);
            let stored = within_deadline(read).await?.map_err(db_error)?;
            stored.iter().map(|l| LeafView::new(&l.leaf)).collect()
        };
        let leaves = leaves.map_err(|e| LogError::internal(e.into()))?;
        let cache = if whole { IMMUTABLE } else { FOR_A_SECOND };
        Ok(LeavesResponse::Leaves(
            Json(LeavesView { leaves }),
            cache.into(),
        ))
    }
}

fn off<const C: u32>() -> ApiError<C> {
    ApiError::new(
        ErrorCode::NotFound,
        "This service runs without a fairness log (APP_FAIRNESS__ENABLED=false).",
    )
}

/// The event's log head, at most a second old; 404 for an unknown event. Before the builder's
/// first append (within about a second of the event's creation) the log is empty, and its
/// checkpoint is signed here: Ed25519 signatures are deterministic, so it is the very note the
/// builder signs for size 0.
async fn head(state: &AppState, raw: i64) -> Result<(CouponId, LogHead), LogError> {
    let id = coupon_id(raw)?;
    let Some(key) = &state.fairness else {
        return Err(off());
    };
    let reads = &state.log_reads;
    let head = state.log_cache.get(id, || store::head(reads.db(), id));
    let head = within_deadline(head).await?.map_err(db_error)?;
    if let Some(head) = head.as_ref().as_ref().filter(|h| h.checkpoint.is_some()) {
        return Ok((id, head.clone()));
    }
    match within_deadline(reads.window(id)).await?.map_err(db_error)? {
        Some(window) => {
            let empty = key
                .sign(id, 0, tlog_tiles::EMPTY_HASH, window)
                .map_err(LogError::internal)?;
            Ok((
                id,
                LogHead {
                    size: 0,
                    checkpoint: Some(empty),
                    complete: false,
                },
            ))
        }
        None => Err(LogError::no_coupon(id)),
    }
}

/// The event's log in memory at `head` (`None`: too large to copy, read it per request).
async fn copy(
    state: &AppState,
    id: CouponId,
    head: &LogHead,
) -> Result<Option<std::sync::Arc<crate::fairness::LogCopy>>, LogError> {
    match within_deadline(state.log_reads.copy(id, head)).await? {
        Ok(copy) => Ok(copy),
        Err(ReadError::Database(e)) => Err(db_error(e)),
        Err(ReadError::Inconsistent(e)) => Err(LogError::internal(e)),
    }
}

/// A reader's statement cancelled by its pool's timeout means what a full pool means: 503.
fn db_error(e: sqlx::Error) -> LogError {
    let code = e.as_database_error().and_then(|d| d.code());
    if code.as_deref() == Some(super::log_reads::QUERY_CANCELED) {
        return LogError::unavailable(&e.into());
    }
    e.into()
}

fn proof_error(e: ProofError) -> LogError {
    match e {
        ProofError::OutOfRange(detail) => LogError::invalid(detail),
        ProofError::Database(e) => db_error(e),
        e @ ProofError::Tree(_) => LogError::internal(e.into()),
    }
}

fn proof_view(proof: Result<Vec<tlog_tiles::Hash>, ProofError>) -> Result<ProofResponse, LogError> {
    let hashes = proof.map_err(proof_error)?;
    Ok(ProofResponse::Proof(
        Json(ProofView {
            hashes: hashes.iter().map(ToString::to_string).collect(),
        }),
        IMMUTABLE.into(),
    ))
}

pub use crate::fairness::verify::Receipt as ReceiptView;

/// Whether `position`'s leaf is in the log, by the head at most a second old; `None` with the
/// log off or PostgreSQL not answering now.
pub(super) async fn receipt_ready(
    state: &AppState,
    coupon: CouponId,
    position: u32,
) -> Option<bool> {
    state.fairness.as_ref()?;
    let head = state
        .log_cache
        .get(coupon, || store::head(&state.db, coupon))
        .await
        .ok()?;
    Some(
        head.as_ref()
            .as_ref()
            .is_some_and(|h| h.size >= u64::from(position)),
    )
}

/// The caller's receipt, once their leaf is in the log; `None` before that, with the log
/// off, or when PostgreSQL cannot answer now (the position answer does not depend on it).
pub(super) async fn receipt(
    state: &AppState,
    coupon: CouponId,
    user: crate::domain::UserId,
    position: u32,
) -> Option<ReceiptView> {
    state.fairness.as_ref()?;
    match read_receipt(state, coupon, user, position).await {
        Ok(receipt) => receipt,
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), %coupon, "receipt not available now");
            None
        }
    }
}

async fn read_receipt(
    state: &AppState,
    coupon: CouponId,
    user: crate::domain::UserId,
    position: u32,
) -> anyhow::Result<Option<ReceiptView>> {
    // The head everyone's receipt is against, at most a second old, read once a second.
    let head = state
        .log_cache
        .get(coupon, || store::head(&state.db, coupon))
        .await?;
    let Some(LogHead {
        size,
        checkpoint: Some(checkpoint),
        ..
    }) = head.as_ref().clone()
    else {
        return Ok(None);
    };
    if size < u64::from(position) {
        return Ok(None);
    }
    let Some((stored, proof)) = store::leaf_with_proof(&state.db, coupon, position, size).await?
    else {
        return Ok(None);
    };
    let (leaf, nonce) = (
        Leaf::from_bytes(&stored.leaf)?,
        stored.nonce.unwrap_or_default(),
    );
    if leaf.commitment != crate::fairness::commitment(&nonce, user) {
        anyhow::bail!("the leaf at position {position} does not commit to the user told it");
    }
    Ok(Some(ReceiptView {
        coupon_id: coupon.get(),
        user_id: user.get(),
        position: position.into(),
        kind: leaf.kind.name().into(),
        arrived_at_us: leaf.arrived_us,
        commitment: hex::encode(leaf.commitment),
        nonce: hex::encode(&nonce),
        leaf: BASE64_STANDARD.encode(&stored.leaf),
        tree_size: size,
        inclusion_proof: proof.iter().map(ToString::to_string).collect(),
        checkpoint,
    }))
}

/// The event's log in its view.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct LogView {
    /// Leaves appended: positions 1 to `size`.
    pub size: u64,
    /// The event is over and every place it handed out has its leaf; `checkpoint` is final.
    pub complete: bool,
    /// The latest signed checkpoint.
    pub checkpoint: String,
}

/// The log's head for the event view, at most a second old; `None` with the log off, before
/// its first checkpoint, or when PostgreSQL cannot answer now.
pub(super) async fn log_view(state: &AppState, coupon: CouponId) -> Option<LogView> {
    state.fairness.as_ref()?;
    let reads = state.log_reads.db();
    let head = state
        .log_cache
        .get(coupon, || store::head(reads, coupon))
        .await;
    match head.as_deref() {
        Ok(Some(head)) => Some(LogView {
            size: head.size,
            complete: head.complete,
            checkpoint: head.checkpoint.clone()?,
        }),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, %coupon, "fairness log head not available now");
            None
        }
    }
}
