use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    assert_problem, eventually, spawn_app_behind_redis_proxy, spawn_app_with, PrivateRedis, MANUAL,
};

#[tokio::test]
async fn redis_unreachable_answers_503_and_admits_nobody() {
    // Arrange: the app reaches Redis only through a proxy the test can cut.
    let (proxy, app) = spawn_app_behind_redis_proxy(|_| {}).await;
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

    let metrics = app.ops_get("/metrics").await.text().await.unwrap();
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
/// The admission script as the gate loads it: the per-status counts' prelude, then apply.lua.
const APPLY: &str = concat!(
    include_str!("../../src/gate/counts.lua"),
    include_str!("../../src/gate/apply.lua")
);

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

#[tokio::test]
async fn a_creation_redis_refuses_leaves_no_event_anywhere() {
    // Arrange: Redis is reachable only through a proxy, cut after the service started.
    let (proxy, app) = spawn_app_behind_redis_proxy(|_| {}).await;
    proxy.cut();

    // Act: the row is written first, then Redis refuses its copy.
    let resp = app
        .post_coupon(
            Some(&app.admin_token()),
            &serde_json::json!({"name": "Half", "stock": 5}),
        )
        .await;

    // Assert: 503, and neither PostgreSQL nor (once back) Redis holds the event.
    assert_problem(resp, StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE").await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM coupon")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 0, "the row was taken back");
    proxy.restore();
    assert!(app.redis_state().await.is_empty(), "no Redis copy");
    let created = app.create_stock(5).await;
    assert_eq!(app.apply(created, 1).await.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn an_admission_no_replica_confirmed_is_503_until_one_does() {
    // Arrange: a master of the test's own, without replicas, and one required.
    let master = PrivateRedis::start().await;
    let app = spawn_app_with(|s| {
        s.redis.url = master.url().into();
        s.redis.ack_replicas = 1;
        s.redis.ack_timeout_ms = 200;
        s.issuer.schedule = MANUAL.into();
    })
    .await;
    let coupon = app.create_stock(5).await;

    // Act + Assert: written on the master, unconfirmed: 503 with Retry-After, and the issuer
    // publishes nothing a failover could take back.
    let resp = app.apply(coupon, 1).await;
    assert!(resp.headers().contains_key("retry-after"));
    let problem = assert_problem(resp, StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE").await;
    assert!(problem["detail"].as_str().unwrap().contains("confirmed"));
    assert_eq!(app.issuer().run_once().await.unwrap().published, 0);

    // A replica joins: asking again returns the ticket, and the winner is published.
    let port = master.port.to_string();
    let _replica = PrivateRedis::start_with(&["--replicaof", "127.0.0.1", &port]).await;
    let ticket: Value = eventually("the ticket confirmed", Duration::from_secs(20), || async {
        let resp = app.apply(coupon, 1).await;
        (resp.status() == StatusCode::OK).then_some(resp.json::<Value>().await.unwrap())
    })
    .await;
    assert_eq!(ticket["position"], 1);
    assert_eq!(app.issuer().run_once().await.unwrap().published, 1);
    app.wait_for_rows(coupon, 1).await;
}
