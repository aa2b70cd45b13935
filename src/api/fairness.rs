//! The fairness log's public endpoints: the verifier key, each event's signed checkpoint, RFC
//! 6962 proofs and the leaves. Anyone may read them; none carries a user id.

use base64::prelude::{Engine, BASE64_STANDARD};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::problem::{declared, ApiError, ErrorCode};
use super::{coupon_id, ApiTags, AppState};
use crate::domain::CouponId;
use crate::fairness::store::{self, LogHead, ProofError};
use crate::fairness::Leaf;

type LogError = ApiError<{ declared::LOG }>;
type KeyError = ApiError<{ declared::KEY }>;

/// The most leaves one `leaves` call returns.
const MAX_LEAVES: u32 = 1_000;

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
    Checkpoint(PlainText<String>),
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
    Proof(Json<ProofView>),
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
    Leaves(Json<LeavesView>),
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
        Ok(CheckpointResponse::Checkpoint(PlainText(
            head.checkpoint.unwrap_or_default(),
        )))
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
        let (id, head) = head(&state, coupon.0).await?;
        let proof = store::inclusion(&state.db, id, position.0, size.0, head.size).await;
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
        let (id, head) = head(&state, coupon.0).await?;
        let proof = store::consistency(&state.db, id, from.0, to.0, head.size).await;
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
        let end = end.min(u32::try_from(head.size + 1).unwrap_or(u32::MAX));
        let leaves = store::leaves(&state.db, id, start, end).await?;
        let leaves = leaves
            .iter()
            .map(|l| LeafView::new(&l.leaf))
            .collect::<Result<_, _>>()
            .map_err(|e| LogError::internal(e.into()))?;
        Ok(LeavesResponse::Leaves(Json(LeavesView { leaves })))
    }
}

fn off<const C: u32>() -> ApiError<C> {
    ApiError::new(
        ErrorCode::NotFound,
        "This service runs without a fairness log (APP_FAIRNESS__ENABLED=false).",
    )
}

/// The event's log head; 404 for an unknown event. Before the builder's first append (within
/// about a second of the event's creation) the log is empty, and its checkpoint is signed here:
/// Ed25519 signatures are deterministic, so it is the very note the builder signs for size 0.
async fn head(state: &AppState, raw: i64) -> Result<(CouponId, LogHead), LogError> {
    let id = coupon_id(raw)?;
    let Some(key) = &state.fairness else {
        return Err(off());
    };
    let head = store::head(&state.db, id).await?;
    if let Some(head) = head.filter(|h| h.checkpoint.is_some()) {
        return Ok((id, head));
    }
    match crate::store::batch_window_us(&state.db, id).await? {
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

fn proof_view(proof: Result<Vec<tlog_tiles::Hash>, ProofError>) -> Result<ProofResponse, LogError> {
    match proof {
        Ok(hashes) => Ok(ProofResponse::Proof(Json(ProofView {
            hashes: hashes.iter().map(ToString::to_string).collect(),
        }))),
        Err(ProofError::OutOfRange(detail)) => Err(LogError::invalid(detail)),
        Err(ProofError::Database(e)) => Err(e.into()),
        Err(e @ ProofError::Tree(_)) => Err(LogError::internal(e.into())),
    }
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
    let head = state
        .log_cache
        .get(coupon, || store::head(&state.db, coupon))
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
