//! The log against PostgreSQL: every leaf must still describe the row at its position. A row
//! changed, deleted or inserted after its leaf was appended is a mismatch.

use std::collections::HashMap;

use super::store::StoredLeaf;
use super::{commitment, Leaf, LeafKind};
use crate::domain::PersistedWinner;

/// A position where the log and the rows disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub position: u32,
    /// The row's user, when there is a row.
    pub user_id: Option<i64>,
    pub detail: String,
}

/// Compares each leaf with the row at its position. Rows beyond the log are not appended yet.
pub fn mismatches(leaves: &[StoredLeaf], rows: &[PersistedWinner]) -> Vec<Mismatch> {
    let by_position: HashMap<u32, &PersistedWinner> =
        rows.iter().map(|r| (r.position.get(), r)).collect();
    let mut found = Vec::new();
    let mut say = |position: u32, row: Option<&PersistedWinner>, detail: String| {
        found.push(Mismatch {
            position,
            user_id: row.map(|r| r.user.get()),
            detail,
        })
    };
    for stored in leaves {
        let position = stored.position as u32;
        let row = by_position.get(&position).copied();
        let leaf = match Leaf::from_bytes(&stored.leaf) {
            Ok(leaf) if leaf.position.get() == position => leaf,
            _ => {
                say(position, row, "the stored leaf is malformed".into());
                continue;
            }
        };
        let matches = |row: &PersistedWinner| {
            let nonce = stored.nonce.as_deref().unwrap_or_default();
            leaf.commitment == commitment(nonce, row.user)
                && leaf.arrived_us == row.applied_at.timestamp_micros()
        };
        match (leaf.kind, row) {
            (LeafKind::Issued, None) => say(
                position,
                None,
                "the log issued this place; its row is gone".into(),
            ),
            (LeafKind::Issued | LeafKind::Failed, Some(row)) if !matches(row) => say(
                position,
                Some(row),
                "the row is not the winner the log recorded here (another user or arrival time)"
                    .into(),
            ),
            (LeafKind::Lost, Some(row)) => say(
                position,
                Some(row),
                "the log recorded this place as lost; a row claims it".into(),
            ),
            // FAILED without a row, or a FAILED winner `redrive` issued since: as recorded.
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::domain::{CouponId, Position, UserId};

    fn row(user: i64, position: u32, at_us: i64) -> PersistedWinner {
        PersistedWinner {
            user: UserId::new(user).unwrap(),
            position: Position::new(position).unwrap(),
            applied_at: DateTime::<Utc>::from_timestamp_micros(at_us).unwrap(),
        }
    }

    fn leaf(kind: LeafKind, user: i64, position: u32, at_us: i64) -> StoredLeaf {
        let nonce = vec![position as u8; 16];
        let leaf = Leaf {
            kind,
            coupon: CouponId::new(1).unwrap(),
            position: Position::new(position).unwrap(),
            arrived_us: at_us,
            commitment: commitment(&nonce, UserId::new(user).unwrap()),
        };
        StoredLeaf {
            position: position as i32,
            leaf: leaf.to_bytes().to_vec(),
            nonce: Some(nonce),
        }
    }

    #[test]
    fn rows_as_the_log_recorded_them_match_and_every_change_is_found() {
        let leaves = [
            leaf(LeafKind::Issued, 10, 1, 100),
            leaf(LeafKind::Issued, 20, 2, 200),
            leaf(LeafKind::Lost, 1, 3, 300),
            leaf(LeafKind::Failed, 40, 4, 400),
        ];
        let rows = [row(10, 1, 100), row(20, 2, 200)];
        assert_eq!(mismatches(&leaves, &rows), vec![]);
        // Redriven since: as recorded.
        let redriven = [row(10, 1, 100), row(20, 2, 200), row(40, 4, 400)];
        assert_eq!(mismatches(&leaves, &redriven), vec![]);

        let swapped = [row(20, 1, 100), row(10, 2, 200)];
        let found: Vec<u32> = mismatches(&leaves, &swapped)
            .iter()
            .map(|m| m.position)
            .collect();
        assert_eq!(found, [1, 2]);
        let deleted = [row(10, 1, 100)];
        assert_eq!(mismatches(&leaves, &deleted)[0].position, 2);
        let retimed = [row(10, 1, 100), row(20, 2, 201)];
        assert_eq!(mismatches(&leaves, &retimed)[0].position, 2);
        let inserted = [row(10, 1, 100), row(20, 2, 200), row(30, 3, 300)];
        assert_eq!(mismatches(&leaves, &inserted)[0].user_id, Some(30));
    }
}
