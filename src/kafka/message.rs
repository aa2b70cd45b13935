use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{CouponId, UserId};
use crate::gate::Winner;

/// The issue request on the topic: `{"v":1, couponId, userId, position, appliedAt, publishedAt}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IssueRequest {
    pub v: u8,
    pub coupon_id: i64,
    pub user_id: i64,
    pub position: u32,
    pub applied_at: DateTime<Utc>,
    pub published_at: DateTime<Utc>,
}

impl IssueRequest {
    pub const VERSION: u8 = 1;

    pub fn new(winner: &Winner, published_at: DateTime<Utc>) -> Self {
        Self {
            v: Self::VERSION,
            coupon_id: winner.coupon.get(),
            user_id: winner.user.get(),
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
        if request.position == 0 {
            return Err("position must be at least 1".into());
        }
        request.coupon()?;
        request.user()?;
        Ok(request)
    }

    pub fn coupon(&self) -> Result<CouponId, String> {
        CouponId::new(self.coupon_id).map_err(|e| e.to_string())
    }

    pub fn user(&self) -> Result<UserId, String> {
        UserId::new(self.user_id).map_err(|e| e.to_string())
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
            position: 1,
            applied_at: Utc::now(),
        };
        let bytes = serde_json::to_vec(&IssueRequest::new(&winner, Utc::now())).unwrap();
        assert_eq!(IssueRequest::decode(Some(&bytes)).unwrap().user_id, 9);
        assert!(IssueRequest::decode(Some(b"not json")).is_err());
        assert!(IssueRequest::decode(None).is_err());
        let zero = String::from_utf8(bytes)
            .unwrap()
            .replace("\"userId\":9", "\"userId\":0");
        assert!(IssueRequest::decode(Some(zero.as_bytes())).is_err());
    }
}
