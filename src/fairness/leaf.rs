//! The log's leaves: one canonical byte string per position, version 1.
//!
//! ```text
//! offset  bytes  field
//!      0      1  version: 1
//!      1      1  kind: 0 ISSUED, 1 LOST, 2 FAILED
//!      2      8  coupon id, big-endian
//!     10      4  position, big-endian
//!     14      8  arrival: the gate's score, µs since the Unix epoch by Redis' clock, big-endian
//!     22     32  commitment: SHA-256(nonce ‖ user id in decimal ASCII); zeros for LOST
//! ```
//!
//! The leaf hash is RFC 6962's: SHA-256(0x00 ‖ leaf). The user id never appears: only its
//! commitment, which the winner (who holds the nonce, from their receipt) can open.

use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

use crate::domain::{CouponId, Position, UserId};

pub const LEAF_VERSION: u8 = 1;
pub const LEAF_BYTES: usize = 54;
pub const NONCE_BYTES: usize = 16;

/// What became of the admission at a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafKind {
    /// Admitted and persisted: the coupon is issued.
    Issued = 0,
    /// Redis lost the admission before it was published; nobody holds the place (its unit of
    /// stock stays spent). The leaf commits to no one.
    Lost = 1,
    /// Admitted, but the coupon could not be recorded (FAILED; `redrive` may still issue it).
    Failed = 2,
}

impl LeafKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Issued => "ISSUED",
            Self::Lost => "LOST",
            Self::Failed => "FAILED",
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        [Self::Issued, Self::Lost, Self::Failed]
            .into_iter()
            .find(|k| *k as u8 == b)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaf {
    pub kind: LeafKind,
    pub coupon: CouponId,
    pub position: Position,
    pub arrived_us: i64,
    pub commitment: [u8; 32],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a version {LEAF_VERSION} leaf: {0}")]
pub struct BadLeaf(&'static str);

impl Leaf {
    pub fn to_bytes(&self) -> [u8; LEAF_BYTES] {
        let mut b = [0u8; LEAF_BYTES];
        b[0] = LEAF_VERSION;
        b[1] = self.kind as u8;
        b[2..10].copy_from_slice(&self.coupon.get().to_be_bytes());
        b[10..14].copy_from_slice(&self.position.get().to_be_bytes());
        b[14..22].copy_from_slice(&self.arrived_us.to_be_bytes());
        b[22..54].copy_from_slice(&self.commitment);
        b
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, BadLeaf> {
        if b.len() != LEAF_BYTES {
            return Err(BadLeaf("wrong length"));
        }
        if b[0] != LEAF_VERSION {
            return Err(BadLeaf("wrong version"));
        }
        let kind = LeafKind::from_byte(b[1]).ok_or(BadLeaf("unknown kind"))?;
        let int = |range: std::ops::Range<usize>| {
            let mut eight = [0u8; 8];
            eight[8 - range.len()..].copy_from_slice(&b[range]);
            i64::from_be_bytes(eight)
        };
        let coupon = CouponId::new(int(2..10)).map_err(|_| BadLeaf("bad coupon id"))?;
        let position = u32::try_from(int(10..14))
            .ok()
            .and_then(|p| Position::new(p).ok())
            .ok_or(BadLeaf("bad position"))?;
        let mut commitment = [0u8; 32];
        commitment.copy_from_slice(&b[22..54]);
        Ok(Self {
            kind,
            coupon,
            position,
            arrived_us: int(14..22),
            commitment,
        })
    }

    /// RFC 6962's leaf hash: SHA-256(0x00 ‖ leaf).
    pub fn hash(&self) -> tlog_tiles::Hash {
        tlog_tiles::record_hash(&self.to_bytes())
    }
}

/// SHA-256(nonce ‖ user id in decimal ASCII): binds the leaf to its user without naming them.
pub fn commitment(nonce: &[u8], user: UserId) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(nonce);
    h.update(user.get().to_string().as_bytes());
    h.finalize().into()
}

pub fn new_nonce() -> [u8; NONCE_BYTES] {
    let mut nonce = [0u8; NONCE_BYTES];
    OsRng.fill_bytes(&mut nonce);
    nonce
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaf_reads_back_as_written_and_refuses_other_bytes() {
        let leaf = Leaf {
            kind: LeafKind::Failed,
            coupon: CouponId::new(7).unwrap(),
            position: Position::new(3).unwrap(),
            arrived_us: 1_764_000_000_123_456,
            commitment: commitment(b"nonce", UserId::new(42).unwrap()),
        };
        let bytes = leaf.to_bytes();
        assert_eq!(Leaf::from_bytes(&bytes), Ok(leaf));
        assert_eq!(Leaf::from_bytes(&bytes[1..]), Err(BadLeaf("wrong length")));
        let mut other = bytes;
        other[0] = 2;
        assert_eq!(Leaf::from_bytes(&other), Err(BadLeaf("wrong version")));
        other = bytes;
        other[1] = 9;
        assert_eq!(Leaf::from_bytes(&other), Err(BadLeaf("unknown kind")));
    }

    #[test]
    fn the_commitment_is_sha256_of_the_nonce_then_the_decimal_user_id() {
        // printf 'abc42' | sha256sum
        let expected = "8216ac77f5c9ed66907b03f1d78b795e7cdd315cecd13df42cd7245d45e16b06";
        let got: String = commitment(b"abc", UserId::new(42).unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, expected);
    }
}
