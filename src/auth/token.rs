use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::domain::UserId;

pub(super) const ADMIN_ROLE: &str = "admin";

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
}

/// Signs and checks tokens with one HS256 secret.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenKeys {
    pub fn new(secret: &SecretString) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        // Pinned: a token whose header names another algorithm (or `none`) is refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
        }
    }

    pub fn mint(&self, user: UserId, admin: bool, ttl: Duration) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = Claims {
            sub: user.to_string(),
            exp: now + ttl.as_secs(),
            iat: Some(now),
            role: admin.then(|| ADMIN_ROLE.to_owned()),
        };
        Ok(encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    pub fn verify(&self, token: &str) -> Result<Caller, TokenError> {
        let data =
            decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                    _ => TokenError::Invalid,
                }
            })?;
        let user = data
            .claims
            .sub
            .parse::<UserId>()
            .map_err(|_| TokenError::BadSubject)?;
        Ok(Caller {
            user,
            admin: data.claims.role.as_deref() == Some(ADMIN_ROLE),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(&"test-secret".into())
    }

    #[test]
    fn minted_tokens_verify() {
        let k = keys();
        let user = UserId::new(42).unwrap();
        let token = k.mint(user, true, Duration::from_secs(60)).unwrap();
        assert_eq!(k.verify(&token).unwrap(), Caller { user, admin: true });
    }

    #[test]
    fn another_secret_is_refused() {
        let token = keys()
            .mint(UserId::new(1).unwrap(), false, Duration::from_secs(60))
            .unwrap();
        let other = TokenKeys::new(&"other".into());
        assert!(matches!(other.verify(&token), Err(TokenError::Invalid)));
    }
}
