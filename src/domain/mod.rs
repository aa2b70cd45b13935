//! Value types whose only constructors check their invariants ("parse, don't validate"),
//! shared by every stage of the pipeline. Nothing here knows about HTTP, Redis or SQL.

mod coupon;
mod ids;
mod status;
mod winner;

pub use coupon::{Coupon, CouponName, CouponState, EventWindow, Stock};
pub use ids::{CouponId, UserId};
pub use status::Status;
pub use winner::{PersistedWinner, Position, Winner};

/// Why a value was rejected; the text is written for the client who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);
