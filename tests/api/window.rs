use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, eventually, spawn_app};

#[tokio::test]
async fn applications_before_the_event_opens_are_refused() {
    let app = spawn_app().await;
    let opens = Utc::now() + chrono::Duration::hours(1);
    let coupon = app
        .create_coupon(json!({"name": "Later", "stock": 10, "opensAt": opens}))
        .await;

    assert_problem(
        app.apply(coupon, 3).await,
        StatusCode::CONFLICT,
        "EVENT_NOT_OPEN",
    )
    .await;

    assert_eq!(app.coupon_json(coupon).await["state"], "SCHEDULED");
    let position: Value = app.position(coupon, 3).await.json().await.unwrap();
    assert_eq!(position["status"], "NOT_APPLIED");
    let wait = position["retryAfterMs"].as_i64().unwrap();
    assert!(
        (3_500_000..=3_600_000).contains(&wait),
        "retryAfterMs = {wait}"
    );
    assert!(app.queue(coupon).await.is_empty());
}

#[tokio::test]
async fn the_event_admits_once_open_and_refuses_once_closed() {
    let app = spawn_app().await;
    let now = Utc::now();
    let coupon = app
        .create_coupon(json!({
            "name": "Short",
            "stock": 10,
            "opensAt": now + chrono::Duration::milliseconds(700),
            "closesAt": now + chrono::Duration::milliseconds(1_400),
        }))
        .await;
    assert_problem(
        app.apply(coupon, 1).await,
        StatusCode::CONFLICT,
        "EVENT_NOT_OPEN",
    )
    .await;

    let state_is = |wanted: &'static str| {
        let app = &app;
        move || async move { (app.coupon_json(coupon).await["state"] == wanted).then_some(()) }
    };
    eventually(
        "the event to open",
        Duration::from_secs(10),
        state_is("OPEN"),
    )
    .await;
    assert_eq!(app.apply(coupon, 1).await.status(), StatusCode::ACCEPTED);

    eventually(
        "the event to close",
        Duration::from_secs(10),
        state_is("CLOSED"),
    )
    .await;
    assert_problem(
        app.apply(coupon, 2).await,
        StatusCode::CONFLICT,
        "EVENT_CLOSED",
    )
    .await;
    // A winner keeps their ticket after the close.
    let again = app.apply(coupon, 1).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.json::<Value>().await.unwrap()["position"], 1);
    assert_eq!(app.queue(coupon).await.len(), 1);
}

#[tokio::test]
async fn a_closed_event_stays_closed_when_the_clock_steps_back() {
    // Arrange: an event that closed, and an application that saw it closed.
    let app = spawn_app().await;
    let closes = Utc::now() + chrono::Duration::milliseconds(500);
    let coupon = app
        .create_coupon(json!({"name": "Gone", "stock": 10, "closesAt": closes}))
        .await;
    assert_eq!(app.apply(coupon, 1).await.status(), StatusCode::ACCEPTED);
    eventually("the event closed", Duration::from_secs(10), || async {
        (app.coupon_json(coupon).await["state"] == "CLOSED").then_some(())
    })
    .await;
    assert_problem(
        app.apply(coupon, 2).await,
        StatusCode::CONFLICT,
        "EVENT_CLOSED",
    )
    .await;

    // Act: Redis' clock steps back an hour. Its TIME cannot be set from here, so the window
    // moves forward an hour instead: to the gate's clock comparison, the same thing.
    let later = (Utc::now() + chrono::Duration::hours(1)).timestamp_micros();
    let _: () = redis::cmd("HSET")
        .arg(&app.keys(coupon).meta)
        .arg("closes_at_us")
        .arg(later)
        .query_async(&mut app.redis.clone())
        .await
        .unwrap();

    // Assert: still closed, to applicants and readers; the admitted winner keeps the ticket.
    assert_problem(
        app.apply(coupon, 3).await,
        StatusCode::CONFLICT,
        "EVENT_CLOSED",
    )
    .await;
    assert_eq!(app.coupon_json(coupon).await["state"], "CLOSED");
    assert_eq!(app.apply(coupon, 1).await.status(), StatusCode::OK);
    assert_eq!(app.admitted(coupon).await, [1]);
}
