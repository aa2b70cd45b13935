//! Value types whose only constructors check their invariants ("parse, don't validate").

mod coupon;
mod ids;
mod status;

pub use coupon::{Coupon, CouponName, CouponState, EventWindow, Stock};
pub use ids::{CouponId, UserId};
pub use status::ApplicationStatus;

/// Why a value was rejected; the text is written for the client who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);
