use chrono::{DateTime, Utc};

use super::{CouponId, InvalidValue};

/// A coupon event as the admin defined it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coupon {
    pub id: CouponId,
    pub name: CouponName,
    pub stock: Stock,
    pub window: EventWindow,
    pub created_at: DateTime<Utc>,
}

/// How many coupons an event gives out: 1 to [`Stock::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stock(u32);

impl Stock {
    /// Keeps one event's sorted set and pending list within a few hundred MiB of Redis.
    pub const MAX: u32 = 10_000_000;

    pub fn new(value: i64) -> Result<Self, InvalidValue> {
        match u32::try_from(value) {
            Ok(v) if (1..=Self::MAX).contains(&v) => Ok(Self(v)),
            _ => Err(InvalidValue(format!(
                "stock must be between 1 and {}, got {value}",
                Self::MAX
            ))),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// An event's display name: 1 to 200 characters, not only white space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponName(String);

impl CouponName {
    pub const MAX_CHARS: usize = 200;

    pub fn new(value: &str) -> Result<Self, InvalidValue> {
        let trimmed = value.trim();
        let chars = trimmed.chars().count();
        if chars == 0 || chars > Self::MAX_CHARS {
            return Err(InvalidValue(format!(
                "name must have 1 to {} characters besides white space",
                Self::MAX_CHARS
            )));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// When applications are accepted: `[opens_at, closes_at)`, either end open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventWindow {
    opens_at: Option<DateTime<Utc>>,
    closes_at: Option<DateTime<Utc>>,
}

impl EventWindow {
    pub fn new(
        opens_at: Option<DateTime<Utc>>,
        closes_at: Option<DateTime<Utc>>,
    ) -> Result<Self, InvalidValue> {
        if let (Some(open), Some(close)) = (opens_at, closes_at) {
            if close <= open {
                return Err(InvalidValue("closesAt must be after opensAt".into()));
            }
        }
        Ok(Self {
            opens_at,
            closes_at,
        })
    }

    pub fn opens_at(&self) -> Option<DateTime<Utc>> {
        self.opens_at
    }

    pub fn closes_at(&self) -> Option<DateTime<Utc>> {
        self.closes_at
    }

    pub fn state_at(&self, now: DateTime<Utc>, sold_out: bool) -> CouponState {
        if self.opens_at.is_some_and(|open| now < open) {
            CouponState::Scheduled
        } else if self.closes_at.is_some_and(|close| now >= close) {
            CouponState::Closed
        } else if sold_out {
            CouponState::SoldOut
        } else {
            CouponState::Open
        }
    }
}

/// What an event looks like to a shopper right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CouponState {
    Scheduled,
    Open,
    SoldOut,
    Closed,
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    #[test]
    fn stock_bounds() {
        assert!(Stock::new(0).is_err());
        assert!(Stock::new(-5).is_err());
        assert!(Stock::new(i64::from(Stock::MAX) + 1).is_err());
        assert_eq!(Stock::new(100).unwrap().get(), 100);
    }

    #[test]
    fn name_is_trimmed_and_bounded() {
        assert_eq!(
            CouponName::new("  Spring sale ").unwrap().as_str(),
            "Spring sale"
        );
        assert!(CouponName::new("   ").is_err());
        assert!(CouponName::new(&"x".repeat(201)).is_err());
    }

    #[test]
    fn window_must_close_after_it_opens() {
        let t = Utc::now();
        assert!(EventWindow::new(Some(t), Some(t)).is_err());
        assert!(EventWindow::new(Some(t), Some(t - Duration::seconds(1))).is_err());
        assert!(EventWindow::new(Some(t), Some(t + Duration::seconds(1))).is_ok());
        assert!(EventWindow::new(None, Some(t)).is_ok());
    }

    #[test]
    fn state_follows_the_window_then_the_stock() {
        let t = Utc::now();
        let w = EventWindow::new(Some(t), Some(t + Duration::hours(1))).unwrap();
        assert_eq!(
            w.state_at(t - Duration::seconds(1), false),
            CouponState::Scheduled
        );
        assert_eq!(w.state_at(t, false), CouponState::Open);
        assert_eq!(w.state_at(t, true), CouponState::SoldOut);
        assert_eq!(
            w.state_at(t + Duration::hours(1), true),
            CouponState::Closed
        );
    }
}
