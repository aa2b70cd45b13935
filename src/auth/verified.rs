//! Tokens verified recently: a crowd's repeated requests (apply, poll, poll…) pay the signature
//! check and the claims' decoding once per token, not once per request (about a tenth of an
//! application's instructions, see README, Performance).
//!
//! Keyed by the whole token, so any other token, forged or not, is never a hit; only tokens
//! that passed verification are kept. A hit is still checked against its `exp`, with the same
//! leeway. An entry lives at most `KEEP_FOR`, which bounds how long a key removed from the
//! provider's JWKS still lets the tokens it signed in; at most `CAPACITY` tokens are kept (the
//! least used leave first), some tens of MB at most.

use std::time::Duration;

use moka::sync::Cache;

use super::token::TokenError;
use super::Caller;

const CAPACITY: u64 = 100_000;
const KEEP_FOR: Duration = Duration::from_secs(300);

pub(super) struct Verified {
    tokens: Cache<String, Entry>,
    leeway: u64,
}

#[derive(Clone, Copy)]
struct Entry {
    caller: Caller,
    /// The token's `exp`, seconds since the epoch.
    expires: u64,
}

impl Verified {
    pub(super) fn new(leeway: u64) -> Self {
        Self {
            tokens: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(KEEP_FOR)
                .build(),
            leeway,
        }
    }

    /// What verifying `token` answered before, when it was kept.
    pub(super) fn get(&self, token: &str) -> Option<Result<Caller, TokenError>> {
        let entry = self.tokens.get(token)?;
        // As jsonwebtoken decides it: expired once `exp` is before now, less the leeway.
        let now = jsonwebtoken::get_current_timestamp();
        Some(if entry.expires < now.saturating_sub(self.leeway) {
            Err(TokenError::Expired)
        } else {
            Ok(entry.caller)
        })
    }

    /// Keeps a token that passed verification, when its `exp` is a whole number of seconds.
    pub(super) fn keep(&self, token: &str, caller: Caller, expires: Option<u64>) {
        if let Some(expires) = expires {
            self.tokens
                .insert(token.to_owned(), Entry { caller, expires });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;

    fn caller() -> Caller {
        Caller {
            user: UserId::new(7).unwrap(),
            admin: false,
        }
    }

    #[test]
    fn only_the_same_token_is_a_hit() {
        let verified = Verified::new(0);
        let now = jsonwebtoken::get_current_timestamp();
        verified.keep("a.b.c", caller(), Some(now + 60));
        assert_eq!(verified.get("a.b.c").unwrap().unwrap(), caller());
        assert!(verified.get("a.b.d").is_none());
        assert!(verified.get("a.b.").is_none());
    }

    #[test]
    fn a_kept_token_still_expires() {
        let verified = Verified::new(30);
        let now = jsonwebtoken::get_current_timestamp();
        verified.keep("in-leeway", caller(), Some(now - 20));
        verified.keep("past-leeway", caller(), Some(now - 40));
        assert!(verified.get("in-leeway").unwrap().is_ok());
        assert!(matches!(
            verified.get("past-leeway"),
            Some(Err(TokenError::Expired))
        ));
    }

    #[test]
    fn a_token_without_a_whole_exp_is_not_kept() {
        let verified = Verified::new(0);
        verified.keep("no-exp", caller(), None);
        assert!(verified.get("no-exp").is_none());
    }
}
