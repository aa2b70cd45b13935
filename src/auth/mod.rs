//! Who is calling: JWTs whose `sub` (or `APP_AUTH__USER_CLAIM`) is the user id, HS256 from this
//! service or RS256/ES256 from an identity provider. The user id never comes from a body.

mod jwks;
mod token;
mod verifier;

pub use jwks::JWKS_REFRESH_AT_MOST_EVERY;
pub use token::{Caller, TokenError, TokenKeys, REHEARSAL_KID};
pub use verifier::Verifier;
