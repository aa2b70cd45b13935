//! Retention: a finished, fully persisted event leaves Redis (`APP_REDIS__RETENTION_SECS`),
//! and every read answers as before, from PostgreSQL.

use std::time::Duration;

use fcfs_coupon::domain::CouponId;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{eventually, spawn_app_with, TestApp};

/// Every read a client can make of the event, and two late applications.
async fn answers(app: &TestApp, coupon: i64) -> Vec<(StatusCode, Value)> {
    let mut out = Vec::new();
    // Stats first: the applications below are counted in Redis while it still has the keys.
    let stats = app.get(&format!("/coupons/{coupon}/stats")).await;
    let mut body: Value = stats.json().await.unwrap();
    body.as_object_mut().unwrap().remove("now");
    out.push((StatusCode::OK, body));
    for resp in [
        app.get(&format!("/coupons/{coupon}")).await,
        app.position(coupon, 1).await,
        app.position(coupon, 4).await,
        app.apply(coupon, 1).await,
        app.apply(coupon, 4).await,
    ] {
        let status = resp.status();
        let mut body: Value = resp.json().await.unwrap();
        // When the view was read, which is all that may differ.
        body.as_object_mut().unwrap().remove("asOf");
        out.push((status, body));
    }
    out
}

#[tokio::test]
async fn a_finished_event_leaves_redis_and_answers_the_same_from_postgres() {
    // Arrange: three coupons, five applicants, every winner persisted.
    let app = spawn_app_with(|s| {
        s.redis.retention_secs = 2;
        s.rate_limit.per_user_per_sec = 0;
    })
    .await;
    let coupon = app.create_stock(3).await;
    let statuses = app.apply_all(coupon, 1..=5, 5).await;
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::ACCEPTED)
            .count(),
        3
    );
    app.wait_for_rows(coupon, 3).await;
    // Its fairness log complete too, as the answers show it, so that they can stay the same.
    eventually("the log complete", Duration::from_secs(10), || async {
        let view = app.coupon_json(coupon).await;
        let answer: Value = app.position(coupon, 1).await.json().await.unwrap();
        (view["log"]["complete"] == Value::Bool(true)
            && answer["receiptReady"] == Value::Bool(true))
        .then_some(())
    })
    .await;

    // The watcher retires it: marked in PostgreSQL, its keys set to expire.
    eventually("the event retired", Duration::from_secs(10), || async {
        let retired: bool =
            sqlx::query_scalar("SELECT retired_at IS NOT NULL FROM coupon WHERE id = $1")
                .bind(coupon)
                .fetch_one(&app.db)
                .await
                .unwrap();
        retired.then_some(())
    })
    .await;
    let keys = app.keys(coupon);
    let all = keys.all();
    let existing = || async {
        let n: u64 = redis::cmd("EXISTS")
            .arg(&all[..])
            .query_async(&mut app.redis.clone())
            .await
            .unwrap();
        n
    };
    // Its losers keep coming while the keys last: the sold-out latch still answers them.
    assert_eq!(app.metric("fcfs_sold_out_latched").await, 1.0);
    let before = answers(&app, coupon).await;
    assert!(existing().await > 0, "the answers before were Redis' own");

    // Act: the keys expire.
    eventually("every key gone", Duration::from_secs(10), || async {
        (existing().await == 0).then_some(())
    })
    .await;

    // Assert: the same answers, from PostgreSQL; the issuer's registry forgot it; the watcher
    // does not take the missing keys for a loss; the audit is clean.
    let after = answers(&app, coupon).await;
    assert_eq!(after, before);
    assert_eq!(before[4].0, StatusCode::OK, "a winner keeps the ticket");
    assert_eq!(before[5].0, StatusCode::GONE);
    let registry: Vec<i64> = redis::cmd("SMEMBERS")
        .arg(format!("{}:coupons", app.settings.redis.key_prefix))
        .query_async(&mut app.redis.clone())
        .await
        .unwrap();
    assert!(!registry.contains(&coupon));
    eventually("the latch let go", Duration::from_secs(10), || async {
        (app.metric("fcfs_sold_out_latched").await == 0.0).then_some(())
    })
    .await;
    // Watched for two of the watcher's looks: the missing keys are not taken for a loss.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(existing().await, 0, "nothing restored");
    let report = fcfs_coupon::ops::audit(&app.gate, &app.db, CouponId::new(coupon).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(report.consistent, "{:?}", report.discrepancies);
}
