use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::domain::UserId;

pub(super) const ADMIN_ROLE: &str = "admin";
/// The `kid` of rehearsal tokens: verified with `APP_AUTH__REHEARSAL_SECRET` only.
pub const REHEARSAL_KID: &str = "rehearsal";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub user: UserId,
    pub admin: bool,
    /// A rehearsal user (`APP_AUTH__REHEARSAL_SECRET`): rehearsal events only, never admin.
    pub rehearsal: bool,
}

impl Caller {
    /// The same user, as a rehearsal user: never an admin.
    pub fn as_rehearsal(self) -> Self {
        Self {
            admin: false,
            rehearsal: true,
            ..self
        }
    }
}

/// Why a token was refused. The text is safe to show the client.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token is expired")]
    Expired,
    #[error("the token is not a valid JWT signed by a key this service trusts")]
    Invalid,
    #[error("the token's user id claim must be a positive integer")]
    BadSubject,
    /// Not the token's fault: the identity provider's keys cannot be had right now.
    #[error("the identity provider's keys cannot be fetched right now; try again shortly")]
    KeysUnavailable,
}

/// Signs the service's own HS256 tokens (`fcfs-coupon token`, the tests), or rehearsal
/// users' tokens (`fcfs-bench rehearse`); `Verifier` checks them.
pub struct TokenKeys {
    encoding: EncodingKey,
    header: Header,
}

impl TokenKeys {
    pub fn new(secret: &SecretString) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret.expose_secret().as_bytes()),
            header: Header::new(Algorithm::HS256),
        }
    }

    /// Keys for rehearsal users' tokens, signed with `APP_AUTH__REHEARSAL_SECRET`: they never
    /// carry the admin role.
    pub fn rehearsal(secret: &SecretString) -> Self {
        let mut keys = Self::new(secret);
        keys.header.kid = Some(REHEARSAL_KID.into());
        keys
    }

    pub fn mint(&self, user: UserId, admin: bool, ttl: Duration) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = Claims {
            sub: user.to_string(),
            exp: now + ttl.as_secs(),
            iat: Some(now),
            role: (admin && self.header.kid.is_none()).then(|| ADMIN_ROLE.to_owned()),
        };
        Ok(encode(&self.header, &claims, &self.encoding)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Verifier;
    use crate::configuration::AuthSettings;

    fn verifier(secret: &str) -> Verifier {
        Verifier::new(&AuthSettings::default(), Some(&secret.into())).unwrap()
    }

    #[tokio::test]
    async fn minted_tokens_verify() {
        let user = UserId::new(42).unwrap();
        let token = TokenKeys::new(&"test-secret".into())
            .mint(user, true, Duration::from_secs(60))
            .unwrap();
        let caller = verifier("test-secret").verify(&token).await.unwrap();
        assert_eq!(
            caller,
            Caller {
                user,
                admin: true,
                rehearsal: false
            }
        );
    }

    #[tokio::test]
    async fn another_secret_is_refused() {
        let token = TokenKeys::new(&"test-secret".into())
            .mint(UserId::new(1).unwrap(), false, Duration::from_secs(60))
            .unwrap();
        let refused = verifier("other").verify(&token).await;
        assert!(matches!(refused, Err(TokenError::Invalid)));
    }
}
