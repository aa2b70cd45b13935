use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{CouponId, InvalidValue, UserId};

/// A place in line: 1 for the first admitted user, up to the stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Position(u32);

impl Position {
    pub fn new(value: u32) -> Result<Self, InvalidValue> {
        if value >= 1 {
            Ok(Self(value))
        } else {
            Err(InvalidValue("position must be at least 1".into()))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Position {
    type Error = InvalidValue;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Position> for u32 {
    fn from(p: Position) -> Self {
        p.0
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An admitted user on the way to PostgreSQL: what the issuer publishes and the consumer
/// persists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Winner {
    pub coupon: CouponId,
    pub user: UserId,
    pub position: Position,
    /// The Redis-side arrival time; also the queue score.
    pub applied_at: DateTime<Utc>,
}

/// A winner as PostgreSQL persisted it (the coupon is implied by the query).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistedWinner {
    pub user: UserId,
    pub position: Position,
    pub applied_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_start_at_one() {
        assert!(Position::new(0).is_err());
        assert_eq!(Position::new(1).unwrap().get(), 1);
        assert!(serde_json::from_str::<Position>("0").is_err());
        assert_eq!(serde_json::from_str::<Position>("7").unwrap().get(), 7);
    }
}
