//! Who is calling: HS256 JWTs whose `sub` is the user id. The user id never comes from a body.

mod token;

pub use token::{Caller, TokenError, TokenKeys};
