use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{CouponId, Position, UserId, Winner};

/// The issue request on the topic: `{"v":1, couponId, userId, position, appliedAt, publishedAt}`.
/// The ids and the position are the domain types, so a decoded message is already valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IssueRequest {
    pub v: u8,
    pub coupon_id: CouponId,
    pub user_id: UserId,
    pub position: Position,
    pub applied_at: DateTime<Utc>,
    pub published_at: DateTime<Utc>,
}

impl IssueRequest {
    pub const VERSION: u8 = 1;

    pub fn new(winner: &Winner, published_at: DateTime<Utc>) -> Self {
        Self {
            v: Self::VERSION,
            coupon_id: winner.coupon,
            user_id: winner.user,
            position: winner.position,
            applied_at: winner.applied_at,
            published_at,
        }
    }

    /// Parses and checks a payload; the error says why it can never be persisted.
    pub fn decode(payload: Option<&[u8]>) -> Result<Self, String> {
        let payload = payload.ok_or("empty payload")?;
        let request: Self =
            serde_json::from_slice(payload).map_err(|e| format!("undecodable payload: {e}"))?;
        if request.v != Self::VERSION {
            return Err(format!("unsupported message version {}", request.v));
        }
        Ok(request)
    }

    pub fn winner(&self) -> Winner {
        Winner {
            coupon: self.coupon_id,
            user: self.user_id,
            position: self.position,
            applied_at: self.applied_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let winner = Winner {
            coupon: CouponId::new(3).unwrap(),
            user: UserId::new(9).unwrap(),
            position: Position::new(1).unwrap(),
            applied_at: Utc::now(),
        };
        let bytes = serde_json::to_vec(&IssueRequest::new(&winner, Utc::now())).unwrap();
        assert_eq!(IssueRequest::decode(Some(&bytes)).unwrap().winner(), winner);
        assert!(IssueRequest::decode(Some(b"not json")).is_err());
        assert!(IssueRequest::decode(None).is_err());
        let text = String::from_utf8(bytes).unwrap();
        for (field, bad) in [
            ("\"userId\":9", "\"userId\":0"),
            ("\"position\":1", "\"position\":0"),
        ] {
            let broken = text.replace(field, bad);
            assert!(
                IssueRequest::decode(Some(broken.as_bytes())).is_err(),
                "{broken}"
            );
        }
    }
}
