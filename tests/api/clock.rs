//! Clocks that disagree: Redis' clock stepping back, and an instance's clock ahead of Redis'.
//! (libfaketime cannot run Debian's redis-server: it aborts on recursive clock_gettime calls;
//! so a step back is made the way the gate would meet it, as earlier scores ahead of its clock.)

use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{assert_settled, eventually, spawn_app_with};

/// Moves every score of the coupon's queue, and its `seq`, `by` into the future: what the
/// queue looks like to a Redis whose clock just stepped back by `by`.
async fn step_redis_clock_back(app: &crate::helpers::TestApp, coupon: i64, by: Duration) {
    let keys = app.keys(coupon);
    let mut conn = app.redis.clone();
    let shift = by.as_micros() as i64;
    let queue: Vec<(String, i64)> = redis::cmd("ZRANGE")
        .arg(&keys.queue)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await
        .unwrap();
    let last = queue.last().unwrap().1 + shift;
    let mut pipe = redis::pipe();
    for (user, score) in &queue {
        pipe.zadd(&keys.queue, user, score + shift).ignore();
    }
    pipe.set(&keys.seq, last).ignore();
    let _: () = pipe.query_async(&mut conn).await.unwrap();
}

#[tokio::test]
async fn a_redis_clock_stepped_back_never_reorders_or_repeats_positions() {
    // Arrange: five winners, then Redis' clock steps back a minute.
    let app = spawn_app_with(|s| s.rate_limit.per_user_per_sec = 0).await;
    let coupon = app.create_stock(10).await;
    for user in 1..=5 {
        assert_eq!(app.apply(coupon, user).await.status(), StatusCode::ACCEPTED);
    }
    step_redis_clock_back(&app, coupon, Duration::from_secs(60)).await;

    // Act: five more arrive.
    let mut told = Vec::new();
    for user in 6..=10 {
        let resp = app.apply(coupon, user).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        told.push(
            resp.json::<Value>().await.unwrap()["position"]
                .as_i64()
                .unwrap(),
        );
    }

    // Assert: they follow the first five, in arrival order, and the earlier winners keep theirs.
    assert_eq!(told, vec![6, 7, 8, 9, 10]);
    let rows = assert_settled(&app, coupon, 10).await;
    let users: Vec<i64> = rows.iter().map(|(u, _)| *u).collect();
    assert_eq!(users, (1..=10).collect::<Vec<_>>());
}

#[tokio::test]
async fn an_event_still_open_by_redis_clock_is_not_retired_by_an_instance_clock_ahead() {
    // Arrange: an event closing in two seconds, whose Redis copy closes in an hour: what an
    // instance whose clock runs an hour ahead of Redis' sees (the gate decides by Redis').
    let app = spawn_app_with(|s| s.rate_limit.per_user_per_sec = 0).await;
    let closes = Utc::now() + chrono::Duration::seconds(2);
    let coupon = app
        .create_coupon(serde_json::json!({"name": "Ahead", "stock": 10, "closesAt": closes}))
        .await;
    let redis_closes = (Utc::now() + chrono::Duration::hours(1)).timestamp_micros();
    let _: () = redis::cmd("HSET")
        .arg(app.keys(coupon).meta)
        .arg("closes_at_us")
        .arg(redis_closes)
        .query_async(&mut app.redis.clone())
        .await
        .unwrap();
    for user in 1..=3 {
        assert_eq!(app.apply(coupon, user).await.status(), StatusCode::ACCEPTED);
    }
    app.wait_for_rows(coupon, 3).await;
    // Past the instance's closing time, with a few looks of the watcher.
    tokio::time::sleep_until(
        tokio::time::Instant::now()
            + (closes - Utc::now()).to_std().unwrap_or_default()
            + Duration::from_secs(3),
    )
    .await;

    // Act: Redis, still open by its clock, admits another.
    let resp = app.apply(coupon, 4).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);

    // Assert: that winner is issued (the event was not retired under it).
    eventually("user 4 persisted", Duration::from_secs(20), || async {
        (app.issued_rows(coupon).await.len() == 4).then_some(())
    })
    .await;
    let retired: Option<chrono::DateTime<Utc>> =
        sqlx::query_scalar("SELECT retired_at FROM coupon WHERE id = $1")
            .bind(coupon)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(retired.is_none(), "retired while Redis still admitted");
}
