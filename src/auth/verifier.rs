//! Verifying bearer tokens: the service's own HS256 tokens (`fcfs-coupon token`), and, when
//! configured, an identity provider's RS256 or ES256 tokens, with a PEM public key
//! (`APP_AUTH__PUBLIC_KEY_FILE`) or the provider's published keys (`APP_AUTH__JWKS_URL`).
//!
//! The algorithm is pinned by the key: HS256 only with the secret, RS256/ES256 only with a key of
//! that type, `none` never. Issuer and audience are checked when configured; the user id comes
//! from `APP_AUTH__USER_CLAIM` (default `sub`) and must be a positive 64-bit integer. Those
//! checks are the provider's; the service's own HS256 tokens carry `sub` and need only its secret.

use std::borrow::Cow;

use anyhow::Context;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use super::jwks::Jwks;
use super::token::{TokenError, ADMIN_ROLE, REHEARSAL_KID};
use super::Caller;
use crate::configuration::AuthSettings;
use crate::domain::UserId;

pub struct Verifier {
    /// The service's own HS256 key; `None` when they are off (`APP_AUTH__LOCAL_TOKENS`).
    secret: Option<DecodingKey>,
    /// `APP_AUTH__REHEARSAL_SECRET`: tokens with `kid: rehearsal` are checked with it, and only
    /// with it (see `Caller::rehearsal`).
    rehearsal: Option<DecodingKey>,
    /// A provider's key from a PEM file, with the algorithm its type allows.
    pem: Option<(DecodingKey, Algorithm)>,
    jwks: Option<Jwks>,
    user_claim: String,
    /// `APP_AUTH__ADMIN_CLAIM` split on dots, and `APP_AUTH__ADMIN_VALUE`.
    admin_claim: Vec<String>,
    admin_value: String,
    /// Built once: the rules are fixed at start, and every request on the hot path needs them.
    own_rules: Validation,
    provider_rules: [Validation; 2],
}

/// What the service's own tokens carry besides `exp` (checked by `jsonwebtoken`).
#[derive(serde::Deserialize)]
struct OwnClaims {
    sub: Value,
    role: Option<Value>,
}

impl Verifier {
    /// Reads the PEM key (a startup error when it cannot be used). The JWKS is fetched on first
    /// use. Without `secret`, the service's own tokens are refused.
    pub fn new(settings: &AuthSettings, secret: Option<&SecretString>) -> anyhow::Result<Self> {
        Self::with_rehearsals(settings, secret, None)
    }

    /// As [`Verifier::new`], also accepting rehearsal users' tokens signed with `rehearsal`.
    pub fn with_rehearsals(
        settings: &AuthSettings,
        secret: Option<&SecretString>,
        rehearsal: Option<&SecretString>,
    ) -> anyhow::Result<Self> {
        let pem = match &settings.public_key_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("APP_AUTH__PUBLIC_KEY_FILE: reading {path:?}"))?;
                let key = DecodingKey::from_rsa_pem(&pem)
                    .map(|k| (k, Algorithm::RS256))
                    .or_else(|_| DecodingKey::from_ec_pem(&pem).map(|k| (k, Algorithm::ES256)))
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "APP_AUTH__PUBLIC_KEY_FILE: {path:?} is not an RSA or P-256 public key in PEM"
                        )
                    })?;
                Some(key)
            }
            None => None,
        };
        let rules = |algorithm| {
            validation(
                algorithm,
                settings.leeway_secs,
                settings.issuer.as_deref(),
                settings.audience.as_deref(),
            )
        };
        Ok(Self {
            secret: secret.map(|s| DecodingKey::from_secret(s.expose_secret().as_bytes())),
            rehearsal: rehearsal.map(|s| DecodingKey::from_secret(s.expose_secret().as_bytes())),
            pem,
            jwks: (settings.jwks_url.clone())
                .map(|url| Jwks::new(url, settings.jwks_ca_file.as_deref()))
                .transpose()?,
            user_claim: settings.user_claim.clone(),
            admin_claim: settings.admin_claim.split('.').map(str::to_owned).collect(),
            admin_value: settings.admin_value.clone(),
            own_rules: rules(Algorithm::HS256),
            provider_rules: [rules(Algorithm::RS256), rules(Algorithm::ES256)],
        })
    }

    /// Fetches the provider's key set, when there is one; the number of keys.
    pub async fn prime(&self) -> anyhow::Result<Option<usize>> {
        match &self.jwks {
            Some(jwks) => jwks
                .prime()
                .await
                .map(Some)
                .context("APP_AUTH__JWKS_URL: fetching the identity provider's keys"),
            None => Ok(None),
        }
    }

    /// Whether the provider's keys are at hand; `None` without a JWKS.
    pub async fn keys_ready(&self) -> Option<bool> {
        match &self.jwks {
            Some(jwks) => Some(jwks.ready().await),
            None => None,
        }
    }

    pub async fn verify(&self, token: &str) -> Result<Caller, TokenError> {
        let header = decode_header(token).map_err(|_| TokenError::Invalid)?;
        // The service's own tokens always carry `sub`, and decode into a struct of their own
        // (every request of a crowd carries one); the user claim is the provider's.
        if header.alg == Algorithm::HS256 {
            // The key is chosen by `kid`, and each key has one meaning: a rehearsal token is
            // never tried against the service's secret, nor one of its own against the
            // rehearsal secret, and a rehearsal token's `role` counts for nothing.
            let rehearsal = header.kid.as_deref() == Some(REHEARSAL_KID);
            let key = if rehearsal {
                &self.rehearsal
            } else {
                &self.secret
            };
            let key = key.as_ref().ok_or(TokenError::Invalid)?;
            let claims: OwnClaims = decode(token, key, &self.own_rules)
                .map_err(rejection)?
                .claims;
            if rehearsal {
                return caller(Some(&claims.sub), false).map(Caller::as_rehearsal);
            }
            let admin = claims.role.as_ref().and_then(Value::as_str) == Some(ADMIN_ROLE);
            return caller(Some(&claims.sub), admin);
        }
        let (key, rules) = match header.alg {
            Algorithm::RS256 | Algorithm::ES256 => self.provider_key(&header).await?,
            _ => return Err(TokenError::Invalid),
        };
        let claims: Map<String, Value> = decode(token, &key, rules).map_err(rejection)?.claims;
        caller(claims.get(&self.user_claim), self.is_admin(&claims))
    }

    /// The provider's way of saying admin: the value at `APP_AUTH__ADMIN_CLAIM` is
    /// `APP_AUTH__ADMIN_VALUE`, or a list holding it (`groups`, `realm_access.roles`).
    fn is_admin(&self, claims: &Map<String, Value>) -> bool {
        let (first, rest) = self.admin_claim.split_first().expect("checked at start");
        let mut found = claims.get(first);
        for name in rest {
            found = found.and_then(|v| v.get(name));
        }
        match found {
            Some(Value::String(s)) => *s == self.admin_value,
            Some(Value::Array(items)) => {
                items.iter().any(|v| v.as_str() == Some(&self.admin_value))
            }
            _ => false,
        }
    }

    /// The provider key for a token's header: the PEM key when its type matches, else the
    /// JWKS key named by `kid` with the same algorithm.
    async fn provider_key(
        &self,
        header: &jsonwebtoken::Header,
    ) -> Result<(Cow<'_, DecodingKey>, &Validation), TokenError> {
        let rules = match header.alg {
            Algorithm::RS256 => &self.provider_rules[0],
            _ => &self.provider_rules[1],
        };
        if let Some((key, algorithm)) = &self.pem {
            if *algorithm == header.alg {
                return Ok((Cow::Borrowed(key), rules));
            }
        }
        let (jwks, kid) = match (&self.jwks, &header.kid) {
            (Some(jwks), Some(kid)) => (jwks, kid),
            _ => return Err(TokenError::Invalid),
        };
        match jwks.key(kid).await {
            Ok(Some((key, algorithm))) if algorithm == header.alg => Ok((Cow::Owned(key), rules)),
            Ok(_) => Err(TokenError::Invalid),
            Err(_) => Err(TokenError::KeysUnavailable),
        }
    }
}

fn rejection(e: jsonwebtoken::errors::Error) -> TokenError {
    match e.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
        _ => TokenError::Invalid,
    }
}

/// The caller a verified token names: its user claim must be a positive 64-bit integer (as a
/// number or a string).
fn caller(user: Option<&Value>, admin: bool) -> Result<Caller, TokenError> {
    let user = match user {
        Some(Value::String(s)) => s.parse::<UserId>().ok(),
        Some(Value::Number(n)) => n.as_i64().and_then(|n| UserId::new(n).ok()),
        _ => None,
    }
    .ok_or(TokenError::BadSubject)?;
    Ok(Caller {
        user,
        admin,
        rehearsal: false,
    })
}

/// The provider's tokens must name its issuer and this audience (when configured); the
/// service's own HS256 tokens carry neither: only its secret can have signed them.
fn validation(
    algorithm: Algorithm,
    leeway: u64,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Validation {
    let mut validation = Validation::new(algorithm);
    let mut required = vec!["exp"];
    validation.leeway = leeway;
    // A token not valid yet is refused, within the same leeway as `exp`.
    validation.validate_nbf = true;
    let provider = algorithm != Algorithm::HS256;
    match issuer.filter(|_| provider) {
        Some(issuer) => {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        None => validation.iss = None,
    }
    match audience.filter(|_| provider) {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}
