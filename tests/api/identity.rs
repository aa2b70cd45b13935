//! Tokens from an identity provider: RS256 with a PEM public key, ES256 from a JWKS endpoint the
//! test runs, with issuer, audience and user-claim checks, unknown `kid`s and key rotation.
//! Keys are generated per test with the machine's `openssl`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use p256::pkcs8::DecodePrivateKey;
use poem::listener::TcpAcceptor;
use poem::web::{Data, Json};
use poem::{get, handler, EndpointExt, IntoResponse, Route, Server};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{eventually, spawn_app_with, KeyDir, TestApp};

const ISSUER: &str = "https://idp.example.test/";
const AUDIENCE: &str = "fcfs-coupon";

/// The identity provider's keys.
trait ProviderKeys {
    fn rsa(&self, name: &str) -> (Vec<u8>, PathBuf);
    fn ec(&self, kid: &str) -> (Vec<u8>, Value);
}

impl ProviderKeys for KeyDir {
    /// An RSA key pair: the private key's PEM, and the path of the public key's PEM.
    fn rsa(&self, name: &str) -> (Vec<u8>, PathBuf) {
        let (private, public) = (format!("{name}.pem"), format!("{name}.pub.pem"));
        self.openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            &private,
        ]);
        self.openssl(&["pkey", "-in", &private, "-pubout", "-out", &public]);
        (self.read(&private), self.path().join(public))
    }

    /// A P-256 key: the private key's PEM, and its public JWK with `kid`.
    fn ec(&self, kid: &str) -> (Vec<u8>, Value) {
        let private = format!("{kid}.pem");
        self.openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &private,
        ]);
        let pem = self.read(&private);
        let secret = p256::SecretKey::from_pkcs8_pem(std::str::from_utf8(&pem).unwrap()).unwrap();
        let mut jwk: Value = serde_json::from_str(&secret.public_key().to_jwk_string()).unwrap();
        jwk["kid"] = kid.into();
        jwk["alg"] = "ES256".into();
        jwk["use"] = "sig".into();
        (pem, jwk)
    }
}

fn sign(algorithm: Algorithm, kid: Option<&str>, private_pem: &[u8], claims: &Value) -> String {
    let key = match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(private_pem).unwrap(),
        _ => EncodingKey::from_ec_pem(private_pem).unwrap(),
    };
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, &key).unwrap()
}

fn claims(user_claim: &str, user: i64) -> Value {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    json!({user_claim: user, "exp": exp, "iss": ISSUER, "aud": AUDIENCE})
}

async fn apply(app: &TestApp, coupon: i64, token: &str) -> StatusCode {
    app.apply_with(&coupon.to_string(), Some(token))
        .await
        .status()
}

#[tokio::test]
async fn provider_tokens_signed_with_a_pem_key_are_checked_for_issuer_audience_and_user() {
    // Arrange: the provider's RSA public key, its issuer and audience, user ids in `uid`.
    let keys = KeyDir::new();
    let (provider, public) = keys.rsa("provider");
    let (stranger, _) = keys.rsa("stranger");
    let app = spawn_app_with(|s| {
        s.auth.public_key_file = Some(public.clone());
        s.auth.issuer = Some(ISSUER.into());
        s.auth.audience = Some(AUDIENCE.into());
        s.auth.user_claim = "uid".into();
        s.rate_limit.per_user_per_sec = 0;
    })
    .await;
    // The service's own admin token (HS256) still works beside the provider's.
    let coupon = app.create_stock(10).await;
    let token = |claims: &Value| sign(Algorithm::RS256, None, &provider, claims);

    // Act + Assert
    assert_eq!(
        apply(&app, coupon, &token(&claims("uid", 42))).await,
        StatusCode::ACCEPTED
    );
    let mut wrong_issuer = claims("uid", 43);
    wrong_issuer["iss"] = "https://evil.example.test/".into();
    let mut wrong_audience = claims("uid", 44);
    wrong_audience["aud"] = "another-service".into();
    let mut no_audience = claims("uid", 45);
    no_audience.as_object_mut().unwrap().remove("aud");
    let refused = [
        token(&wrong_issuer),
        token(&wrong_audience),
        token(&no_audience),
        token(&claims("sub", 46)),
        token(&claims("uid", -1)),
        sign(Algorithm::RS256, None, &stranger, &claims("uid", 47)),
    ];
    for bad in &refused {
        assert_eq!(apply(&app, coupon, bad).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.admitted(coupon).await, [42]);
}

#[tokio::test]
async fn with_a_provider_admins_follow_its_admin_claim_early_tokens_wait_and_local_tokens_can_be_off(
) {
    // Arrange: the provider's key; admin is `realm_access.roles` holding "admin" (Keycloak's
    // way); the service's own HS256 tokens are off.
    let keys = KeyDir::new();
    let (provider, public) = keys.rsa("provider");
    let app = spawn_app_with(|s| {
        s.auth.public_key_file = Some(public.clone());
        s.auth.issuer = Some(ISSUER.into());
        s.auth.audience = Some(AUDIENCE.into());
        s.auth.admin_claim = "realm_access.roles".into();
        s.auth.local_tokens = Some(false);
        s.rate_limit.per_user_per_sec = 0;
    })
    .await;
    let token = |claims: &Value| sign(Algorithm::RS256, None, &provider, claims);
    let event = json!({"name": "Flash sale", "stock": 5});
    let created = |token: String| {
        let (app, event) = (&app, &event);
        async move { app.post_coupon(Some(&token), event).await }
    };

    // Act + Assert: a top-level "role": "admin" (another application's convention, same keys)
    // is not admin here; the configured claim is, as a list or a single value.
    let mut top_level = claims("sub", 1);
    top_level["role"] = "admin".into();
    let status = |resp: reqwest::Response| resp.status();
    assert_eq!(
        status(created(token(&top_level)).await),
        StatusCode::FORBIDDEN
    );
    let mut realm_admin = claims("sub", 2);
    realm_admin["realm_access"] = json!({"roles": ["user", "admin"]});
    let resp = created(token(&realm_admin)).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let coupon = resp.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    realm_admin["realm_access"] = json!({"roles": "admin"});
    assert_eq!(
        status(created(token(&realm_admin)).await),
        StatusCode::CREATED
    );
    realm_admin["realm_access"] = json!({"roles": ["administrator"]});
    assert_eq!(
        status(created(token(&realm_admin)).await),
        StatusCode::FORBIDDEN
    );

    // The service's own tokens, admin or not, are refused.
    assert_eq!(
        status(created(app.admin_token()).await),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        apply(&app, coupon, &app.user_token(9)).await,
        StatusCode::UNAUTHORIZED
    );

    // `nbf` a minute ahead (beyond the 30 s leeway) is refused; within the leeway, accepted.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut early = claims("sub", 3);
    early["nbf"] = (now + 60).into();
    assert_eq!(
        apply(&app, coupon, &token(&early)).await,
        StatusCode::UNAUTHORIZED
    );
    early["nbf"] = (now + 10).into();
    assert_eq!(
        apply(&app, coupon, &token(&early)).await,
        StatusCode::ACCEPTED
    );
}

#[test]
fn in_production_with_a_provider_the_service_mints_no_tokens_of_its_own() {
    let keys = KeyDir::new();
    let (_, public) = keys.rsa("provider");
    let mint = |extra: &[(&str, &str)]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_fcfs-coupon"))
            .args(["token", "--user", "7"])
            .env("APP_ENV", "production")
            .env("APP_AUTH__PUBLIC_KEY_FILE", &public)
            .env("APP_AUTH__ISSUER", ISSUER)
            .env("APP_AUTH__AUDIENCE", AUDIENCE)
            .env(
                "APP_AUTH__JWT_SECRET",
                "a-production-secret-of-at-least-32-bytes!",
            )
            .envs(extra.iter().copied())
            .output()
            .unwrap()
    };
    let refused = mint(&[]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("APP_AUTH__LOCAL_TOKENS"), "{said}");
    // Turned back on explicitly, it mints.
    let minted = mint(&[("APP_AUTH__LOCAL_TOKENS", "true")]);
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
}

/// A JWKS endpoint the test controls: the set it serves, how often it was fetched, whether it
/// is failing, and the `max-age` it announces.
#[derive(Default)]
struct Provider {
    keys: Mutex<Vec<Value>>,
    fetches: AtomicU32,
    failing: AtomicBool,
    max_age_secs: Mutex<Option<u64>>,
}

#[handler]
fn jwks(provider: Data<&Arc<Provider>>) -> poem::Response {
    provider.fetches.fetch_add(1, Ordering::SeqCst);
    if provider.failing.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let mut response = Json(json!({ "keys": *provider.keys.lock().unwrap() })).into_response();
    if let Some(age) = *provider.max_age_secs.lock().unwrap() {
        let value = format!("public, max-age={age}").parse().unwrap();
        response.headers_mut().insert("cache-control", value);
    }
    response
}

async fn serve(provider: Arc<Provider>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    let acceptor = TcpAcceptor::from_tokio(listener).unwrap();
    tokio::spawn(
        Server::new_with_acceptor(acceptor).run(Route::new().at("/jwks", get(jwks)).data(provider)),
    );
    url
}

/// The service trusting the provider at `url` (its issuer and audience), without rate limits.
async fn jwks_app(url: String) -> TestApp {
    spawn_app_with(|s| {
        s.auth.jwks_url = Some(url);
        s.auth.issuer = Some(ISSUER.into());
        s.auth.audience = Some(AUDIENCE.into());
        s.rate_limit.per_user_per_sec = 0;
    })
    .await
}

#[tokio::test]
async fn jwks_keys_are_found_by_kid_refreshed_at_most_every_ten_seconds_and_rotated() {
    // Arrange: a provider publishing one P-256 key, `k1`.
    let keys = KeyDir::new();
    let (k1, k1_public) = keys.ec("k1");
    let (k2, k2_public) = keys.ec("k2");
    let provider = Arc::new(Provider::default());
    *provider.keys.lock().unwrap() = vec![k1_public];
    let url = serve(provider.clone()).await;
    let started = Instant::now();
    let app = jwks_app(url).await;
    let coupon = app.create_stock(10).await;
    let fetches = || provider.fetches.load(Ordering::SeqCst);

    // A token with the published kid is accepted; the set was fetched once.
    let token = |kid: &str, key: &[u8], user: i64| {
        sign(Algorithm::ES256, Some(kid), key, &claims("sub", user))
    };
    assert_eq!(
        apply(&app, coupon, &token("k1", &k1, 1)).await,
        StatusCode::ACCEPTED
    );
    assert_eq!(fetches(), 1);

    // Unknown kids are refused without hammering the provider: at most one fetch every ten
    // seconds (so none more here, unless a busy machine took that long to get here).
    for user in 2..=6 {
        assert_eq!(
            apply(&app, coupon, &token("k9", &k1, user)).await,
            StatusCode::UNAUTHORIZED
        );
    }
    let since = started.elapsed();
    let most = 1 + since.as_secs() / fcfs_coupon::auth::JWKS_REFRESH_AT_MOST_EVERY.as_secs();
    assert!(
        u64::from(fetches()) <= most,
        "{} fetches in {since:.1?} since the start: unknown kids refetched the set",
        fetches()
    );

    // Rotation: the provider replaces k1 with k2. The new kid is accepted once the set may be
    // fetched again, after exactly one more fetch however often it was tried meanwhile.
    *provider.keys.lock().unwrap() = vec![k2_public];
    let rotated = token("k2", &k2, 7);
    let before = fetches();
    let within = fcfs_coupon::auth::JWKS_REFRESH_AT_MOST_EVERY + Duration::from_secs(10);
    eventually("the rotated key accepted", within, || async {
        (apply(&app, coupon, &rotated).await == StatusCode::ACCEPTED).then_some(())
    })
    .await;
    assert_eq!(fetches(), before + 1);
    assert_eq!(
        apply(&app, coupon, &token("k1", &k1, 8)).await,
        StatusCode::UNAUTHORIZED,
        "a retired key"
    );
    assert_eq!(app.admitted(coupon).await, [1, 7]);
}

#[tokio::test]
async fn jwks_keys_are_fetched_at_start_kept_fresh_by_max_age_and_missing_keys_answer_503() {
    // Arrange: a provider that fails at first; the service starts anyway (development).
    let keys = KeyDir::new();
    let (k1, k1_public) = keys.ec("k1");
    let (k2, k2_public) = keys.ec("k2");
    let provider = Arc::new(Provider::default());
    *provider.keys.lock().unwrap() = vec![k1_public];
    *provider.max_age_secs.lock().unwrap() = Some(1);
    provider.failing.store(true, Ordering::SeqCst);
    let url = serve(provider.clone()).await;
    let app = jwks_app(url).await;
    let coupon = app.create_stock(10).await;
    let fetches = || provider.fetches.load(Ordering::SeqCst);
    let token = |kid: &str, key: &[u8], user: i64| {
        sign(Algorithm::ES256, Some(kid), key, &claims("sub", user))
    };
    assert_eq!(fetches(), 1, "fetched at start");

    // Without keys: 503 with Retry-After (the token may be fine), readiness says why.
    let resp = app
        .apply_with(&coupon.to_string(), Some(&token("k1", &k1, 1)))
        .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["identityProvider"], "down", "{ready}");

    // The provider recovers: within its refetch limit the keys come, and readiness follows.
    provider.failing.store(false, Ordering::SeqCst);
    let within = fcfs_coupon::auth::JWKS_REFRESH_AT_MOST_EVERY + Duration::from_secs(5);
    eventually("the keys fetched", within, || async {
        (apply(&app, coupon, &token("k1", &k1, 1)).await == StatusCode::ACCEPTED).then_some(())
    })
    .await;
    eventually("ready", Duration::from_secs(30), || async {
        (app.get("/health/ready").await.status() == StatusCode::OK).then_some(())
    })
    .await;

    // max-age=1: a known kid past it fetches the set again, so a key the provider withdrew
    // stops working without waiting for an unknown kid.
    let before = fetches();
    *provider.keys.lock().unwrap() = vec![k2_public];
    // A hang guard far below the 300 s a set lives without max-age.
    eventually("k1 withdrawn", Duration::from_secs(60), || async {
        (apply(&app, coupon, &token("k1", &k1, 2)).await == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert!(fetches() > before);
    assert_eq!(
        apply(&app, coupon, &token("k2", &k2, 3)).await,
        StatusCode::ACCEPTED
    );
    // (User 2 may have got in with k1 while the set was still fresh.)
    let admitted = app.admitted(coupon).await;
    assert!(
        admitted.contains(&1) && admitted.contains(&3),
        "{admitted:?}"
    );
}
