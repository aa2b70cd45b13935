use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{assert_problem, spawn_app_with, PrivateRedis, TcpProxy};

#[tokio::test]
async fn redis_unreachable_answers_503_and_admits_nobody() {
    // Arrange: the app reaches Redis only through a proxy the test can cut.
    let proxy = TcpProxy::start("127.0.0.1:6379").await;
    let app = spawn_app_with(|s| {
        s.redis.url = format!("redis://127.0.0.1:{}", proxy.port).into();
        s.redis.timeout_ms = 500;
    })
    .await;
    let coupon = app.create_stock(5).await;

    // Act
    proxy.cut();
    let apply = app.apply(coupon, 1).await;
    let position = app.position(coupon, 1).await;
    let ready = app.get("/health/ready").await;

    // Assert: 503 UNAVAILABLE, readiness says which dependency is down, and nothing admitted.
    let problem = assert_problem(apply, StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE").await;
    assert!(!problem["detail"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .contains("redis error"));
    assert_problem(position, StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["redis"], "down");
    assert_eq!(ready["postgres"], "up");

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("fcfs_dependency_errors_total{dependency=\"redis\"}")),
        "Redis failures are counted:\n{metrics}"
    );

    proxy.restore();
    assert!(
        app.queue(coupon).await.is_empty(),
        "nobody was admitted while Redis was away"
    );
    let after = app.apply(coupon, 1).await;
    assert_eq!(after.status(), StatusCode::ACCEPTED);
    assert_eq!(after.json::<Value>().await.unwrap()["position"], 1);
}

/// The admission script, as the gate sends it.
const APPLY: &str = include_str!("../../src/gate/apply.lua");

#[tokio::test]
async fn applies_survive_a_script_flush() {
    // Arrange: a server of the test's own, so no parallel test reloads the scripts between the
    // flush and the apply.
    let redis = PrivateRedis::start().await;
    let app = spawn_app_with(|s| s.redis.url = redis.url().into()).await;
    let coupon = app.create_stock(5).await;
    assert_eq!(app.apply(coupon, 1).await.status(), StatusCode::ACCEPTED);

    // Act
    redis.flush_scripts().await;
    assert!(
        !redis.has_script(APPLY).await,
        "the flush emptied the cache"
    );
    let second = app.apply(coupon, 2).await;

    // Assert: the apply met NOSCRIPT, loaded the script again, and answered as usual.
    assert_eq!(second.status(), StatusCode::ACCEPTED);
    assert_eq!(second.json::<Value>().await.unwrap()["position"], 2);
    assert!(redis.has_script(APPLY).await, "the apply loaded it again");
    assert_eq!(app.position(coupon, 2).await.status(), StatusCode::OK);
}
