//! Every malformed request gets a clear problem+json error and changes nothing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, spawn_app_with, TestApp, MANUAL};

fn signed(app: &TestApp, alg: Algorithm, claims: Value) -> String {
    let secret = app.settings.auth.secret();
    let key = EncodingKey::from_secret(secret.expose_secret().as_bytes());
    encode(&Header::new(alg), &claims, &key).unwrap()
}

fn in_an_hour() -> i64 {
    chrono::Utc::now().timestamp() + 3600
}

/// Tokens that must all be refused with 401.
fn bad_tokens(app: &TestApp) -> Vec<(&'static str, String)> {
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(json!({"sub": "5", "exp": in_an_hour()}).to_string()),
    );
    let other_secret = fcfs_coupon::auth::TokenKeys::new(&"not-our-secret".into())
        .mint(
            fcfs_coupon::domain::UserId::new(5).unwrap(),
            true,
            std::time::Duration::from_secs(60),
        )
        .unwrap();
    let claims = |sub: Value| json!({"sub": sub, "exp": in_an_hour()});
    vec![
        ("malformed", "not-a-jwt".into()),
        ("alg none", unsigned),
        ("wrong secret", other_secret),
        (
            "expired",
            signed(app, Algorithm::HS256, json!({"sub": "5", "exp": 1_000_000})),
        ),
        ("no exp", signed(app, Algorithm::HS256, json!({"sub": "5"}))),
        (
            "HS512, not the pinned HS256",
            signed(app, Algorithm::HS512, claims(json!("5"))),
        ),
        (
            "sub not a number",
            signed(app, Algorithm::HS256, claims(json!("alice"))),
        ),
        (
            "sub zero",
            signed(app, Algorithm::HS256, claims(json!("0"))),
        ),
        (
            "sub negative",
            signed(app, Algorithm::HS256, claims(json!("-5"))),
        ),
        (
            "sub beyond i64",
            signed(app, Algorithm::HS256, claims(json!("9223372036854775808"))),
        ),
        (
            "no sub",
            signed(app, Algorithm::HS256, json!({"exp": in_an_hour()})),
        ),
    ]
}

/// An app holding one event with one winner, so "nothing changed" is a real comparison.
async fn app_with_an_event() -> (TestApp, i64) {
    // The issuer stays still, so nothing moves between the before and after snapshots.
    let app = spawn_app_with(|s| s.issuer.schedule = MANUAL.into()).await;
    let coupon = app.create_stock(10).await;
    assert_eq!(app.apply(coupon, 77).await.status(), StatusCode::ACCEPTED);
    (app, coupon)
}

#[tokio::test]
async fn bad_tokens_are_refused_and_change_nothing() {
    let (app, coupon) = app_with_an_event().await;
    let (redis_before, db_before) = (app.redis_state().await, app.db_state().await);
    let id = coupon.to_string();

    assert_problem(
        app.apply_with(&id, None).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
    )
    .await;
    let basic = app
        .client
        .post(app.url(&format!("/coupons/{id}/issue")))
        .header("Authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_problem(basic, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    for (case, token) in bad_tokens(&app) {
        let resp = app.apply_with(&id, Some(&token)).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{case}");
        assert_problem(resp, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
        let body = json!({"name": "x", "stock": 1});
        let resp = app.post_coupon(Some(&token), &body).await;
        assert_eq!(
            resp.status(),
            StatusCode::UNAUTHORIZED,
            "{case} on an admin call"
        );
    }

    assert_eq!(app.redis_state().await, redis_before);
    assert_eq!(app.db_state().await, db_before);
}

#[tokio::test]
async fn a_user_token_cannot_create_events() {
    let (app, _) = app_with_an_event().await;
    let (redis_before, db_before) = (app.redis_state().await, app.db_state().await);

    let resp = app
        .post_coupon(
            Some(&app.user_token(5)),
            &json!({"name": "Mine", "stock": 5}),
        )
        .await;
    assert_problem(resp, StatusCode::FORBIDDEN, "FORBIDDEN").await;

    assert_eq!(app.redis_state().await, redis_before);
    assert_eq!(app.db_state().await, db_before);
}

#[tokio::test]
async fn invalid_events_are_refused_and_change_nothing() {
    let (app, _) = app_with_an_event().await;
    let (redis_before, db_before) = (app.redis_state().await, app.db_state().await);
    let admin = app.admin_token();
    let cases = [
        ("stock 0", json!({"name": "a", "stock": 0})),
        ("stock negative", json!({"name": "a", "stock": -3})),
        ("stock too large", json!({"name": "a", "stock": 10_000_001})),
        ("stock not numeric", json!({"name": "a", "stock": "ten"})),
        ("stock fractional", json!({"name": "a", "stock": 1.5})),
        ("no stock", json!({"name": "a"})),
        ("no name", json!({"stock": 5})),
        ("empty name", json!({"name": "", "stock": 5})),
        ("blank name", json!({"name": "   ", "stock": 5})),
        (
            "name too long",
            json!({"name": "x".repeat(201), "stock": 5}),
        ),
        (
            "bad timestamp",
            json!({"name": "a", "stock": 5, "opensAt": "tomorrow"}),
        ),
        (
            "closesAt equal to opensAt",
            json!({"name": "a", "stock": 5, "opensAt": "2030-01-01T00:00:00Z", "closesAt": "2030-01-01T00:00:00Z"}),
        ),
        (
            "closesAt before opensAt",
            json!({"name": "a", "stock": 5, "opensAt": "2030-01-02T00:00:00Z", "closesAt": "2030-01-01T00:00:00Z"}),
        ),
        (
            "misspelled field",
            json!({"name": "a", "stock": 5, "opensAT": "2030-01-01T00:00:00Z"}),
        ),
        ("not an object", json!([1, 2, 3])),
    ];
    for (case, body) in cases {
        let resp = app.post_coupon(Some(&admin), &body).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{case}");
        let problem = assert_problem(resp, StatusCode::BAD_REQUEST, "INVALID_REQUEST").await;
        println!("{case}: {}", problem["detail"]);
    }
    let not_json = app
        .client
        .post(app.url("/coupons"))
        .bearer_auth(&admin)
        .header("Content-Type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_problem(not_json, StatusCode::BAD_REQUEST, "INVALID_REQUEST").await;

    assert_eq!(app.redis_state().await, redis_before);
    assert_eq!(app.db_state().await, db_before);
}

#[tokio::test]
async fn malformed_and_unknown_coupon_ids_are_refused_and_change_nothing() {
    let (app, _) = app_with_an_event().await;
    let (redis_before, db_before) = (app.redis_state().await, app.db_state().await);
    let token = app.user_token(5);

    for id in ["abc", "1.5", "0", "-4", "99999999999999999999"] {
        let apply = app.apply_with(id, Some(&token)).await;
        assert_problem(apply, StatusCode::BAD_REQUEST, "INVALID_REQUEST").await;
        let get = app.get_coupon(id).await;
        assert_problem(get, StatusCode::BAD_REQUEST, "INVALID_REQUEST").await;
    }
    let unknown = "987654321";
    let apply = app.apply_with(unknown, Some(&token)).await;
    assert_problem(apply, StatusCode::NOT_FOUND, "COUPON_NOT_FOUND").await;
    let get = app.get_coupon(unknown).await;
    assert_problem(get, StatusCode::NOT_FOUND, "COUPON_NOT_FOUND").await;
    let position = app.position(987_654_321, 5).await;
    assert_problem(position, StatusCode::NOT_FOUND, "COUPON_NOT_FOUND").await;
    let no_route = app.get("/nowhere").await;
    assert_problem(no_route, StatusCode::NOT_FOUND, "NOT_FOUND").await;

    assert_eq!(app.redis_state().await, redis_before);
    assert_eq!(app.db_state().await, db_before);
}
