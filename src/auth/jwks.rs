//! An identity provider's published keys (`APP_AUTH__JWKS_URL`), by `kid`. Fetched at start
//! (production does not start without them), fetched again when the provider's
//! `Cache-Control: max-age` runs out, and for an unknown `kid` at most every
//! [`JWKS_REFRESH_AT_MOST_EVERY`]. A failed refresh keeps the last good set; with no set at all,
//! callers hear 503 + `Retry-After`, not 401: their token may be fine.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{Mutex, RwLock};
use tokio::time::Instant;

/// An unknown `kid`, or a failed fetch, fetches again at most this often, so tokens with
/// made-up key ids cannot make the service hammer the provider.
pub const JWKS_REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(10);
/// How long a set is fresh when the provider says nothing, and the bounds on what it says.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
const MAX_AGE_BOUNDS: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(86_400));

pub(super) type Key = (DecodingKey, Algorithm);

pub(super) struct Jwks {
    url: String,
    client: reqwest::Client,
    set: RwLock<KeySet>,
    /// Held while fetching: one fetch at a time.
    fetching: Mutex<()>,
}

#[derive(Default)]
struct KeySet {
    keys: HashMap<String, Key>,
    /// When the set was fetched, and until when it is fresh.
    fresh_until: Option<Instant>,
    /// When a fetch last ran, whatever came of it.
    tried: Option<Instant>,
    /// Whether that fetch failed.
    failed: bool,
}

impl KeySet {
    /// A stale set is fetched again at once (its max-age is at least a second); an unknown
    /// `kid` or a failed fetch waits out [`JWKS_REFRESH_AT_MOST_EVERY`].
    fn may_fetch(&self) -> bool {
        let stale = self.fresh_until.is_none_or(|until| Instant::now() >= until);
        match self.tried {
            None => true,
            Some(at) => at.elapsed() >= JWKS_REFRESH_AT_MOST_EVERY || (stale && !self.failed),
        }
    }
}

/// No key set could be had: the provider has not answered since start.
#[derive(Debug)]
pub(super) struct Unavailable;

impl Jwks {
    /// `ca_file`: a private CA the provider's certificate is signed by.
    pub(super) fn new(url: String, ca_file: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let mut client = reqwest::Client::builder().timeout(Duration::from_secs(5));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("APP_AUTH__JWKS_CA_FILE: reading {path:?}"))?;
            let ca = reqwest::Certificate::from_pem(&pem).with_context(|| {
                format!("APP_AUTH__JWKS_CA_FILE: {path:?} is not a PEM certificate")
            })?;
            client = client.add_root_certificate(ca);
        }
        Ok(Self {
            url,
            client: client.build().context("building the JWKS client")?,
            set: RwLock::default(),
            fetching: Mutex::default(),
        })
    }

    /// Fetches the set now (at start).
    pub(super) async fn prime(&self) -> anyhow::Result<usize> {
        let _one = self.fetching.lock().await;
        self.refresh().await
    }

    /// Whether a key set is at hand.
    pub(super) async fn ready(&self) -> bool {
        !self.set.read().await.keys.is_empty()
    }

    pub(super) async fn key(&self, kid: &str) -> Result<Option<Key>, Unavailable> {
        if let Some(key) = self.fresh_key(kid).await {
            return Ok(Some(key));
        }
        let _one = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(key) = self.fresh_key(kid).await {
            return Ok(Some(key));
        }
        let may_fetch = self.set.read().await.may_fetch();
        if may_fetch {
            let _ = self.refresh().await;
        }
        let set = self.set.read().await;
        if set.keys.is_empty() {
            return Err(Unavailable);
        }
        // A stale set whose refresh failed still serves: the provider is down, not the keys.
        Ok(set.keys.get(kid).cloned())
    }

    async fn fresh_key(&self, kid: &str) -> Option<Key> {
        let set = self.set.read().await;
        let fresh = set.fresh_until.is_some_and(|until| Instant::now() < until);
        fresh.then(|| set.keys.get(kid).cloned()).flatten()
    }

    /// One fetch; the set is replaced only by a good one. Called with `fetching` held.
    async fn refresh(&self) -> anyhow::Result<usize> {
        self.set.write().await.tried = Some(Instant::now());
        let fetched = self.fetch().await;
        self.set.write().await.failed = fetched.is_err();
        match fetched {
            Ok((keys, max_age)) => {
                let n = keys.len();
                let mut set = self.set.write().await;
                set.keys = keys;
                set.fresh_until = Some(Instant::now() + max_age);
                tracing::info!(url = %shown(&self.url), keys = n, max_age_secs = max_age.as_secs(), "fetched the identity provider's keys");
                Ok(n)
            }
            Err(e) => {
                tracing::warn!(error = ?e, url = %shown(&self.url), "fetching the JWKS failed");
                Err(e)
            }
        }
    }

    async fn fetch(&self) -> anyhow::Result<(HashMap<String, Key>, Duration)> {
        // Errors name no URL: it may carry a token (see `shown`).
        let response = self
            .client
            .get(&self.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(reqwest::Error::without_url)?;
        let max_age = max_age(response.headers()).unwrap_or(DEFAULT_MAX_AGE);
        let set: JwkSet = response.json().await.map_err(reqwest::Error::without_url)?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let algorithm = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                _ => continue,
            };
            if let (Some(kid), Ok(key)) = (&jwk.common.key_id, DecodingKey::from_jwk(jwk)) {
                keys.insert(kid.clone(), (key, algorithm));
            }
        }
        anyhow::ensure!(
            !keys.is_empty(),
            "the key set holds no RS256 or ES256 key with a kid"
        );
        Ok((keys, max_age.clamp(MAX_AGE_BOUNDS.0, MAX_AGE_BOUNDS.1)))
    }
}

/// `Cache-Control: max-age=N` (`no-store`/`no-cache` count as the shortest).
fn max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::CACHE_CONTROL)?.to_str().ok()?;
    value.split(',').map(str::trim).find_map(|directive| {
        if directive == "no-store" || directive == "no-cache" {
            return Some(Duration::ZERO);
        }
        let seconds = directive.strip_prefix("max-age=")?.parse().ok()?;
        Some(Duration::from_secs(seconds))
    })
}

/// A URL as logs may show it: no user, password, query or fragment (a JWKS URL may carry a
/// token).
pub(super) fn shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => "(not a URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderMap, HeaderValue, CACHE_CONTROL};

    #[test]
    fn logged_urls_carry_no_credentials() {
        let shown = super::shown("https://app:pw@idp.example.test/keys?token=s3cret#x");
        assert_eq!(shown, "https://idp.example.test/keys");
    }

    #[test]
    fn the_providers_max_age_is_read() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(CACHE_CONTROL, HeaderValue::from_static(value));
            super::max_age(&headers).map(|d| d.as_secs())
        };
        assert_eq!(with("public, max-age=600, must-revalidate"), Some(600));
        assert_eq!(with("no-store"), Some(0));
        assert_eq!(with("public"), None);
    }
}
