use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_problem, eventually, spawn_app, spawn_app_with, TestApp};

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

/// How long a test gives itself to act before an event's boundary; doubled (on a new event)
/// each time the machine was too busy to act in time, up to `MAX_LEAD`. A test reads the clock
/// after each answer, so lateness is never taken for a wrong answer: a busy machine costs time,
/// never the verdict.
const FIRST_LEAD_MS: i64 = 700;
const MAX_LEAD: chrono::Duration = chrono::Duration::seconds(30);

/// An event opening `lead` from now and closing `lead` after: `Some` when user 1 was refused
/// before it opened and admitted once it read OPEN; `None` when an answer came after the
/// boundary it had to come before.
async fn refused_then_admitted(app: &TestApp, lead: chrono::Duration) -> Option<i64> {
    let opens = Utc::now() + lead;
    let closes = opens + lead;
    let coupon = app
        .create_coupon(json!({"name": "Short", "stock": 10, "opensAt": opens, "closesAt": closes}))
        .await;
    let early = app.apply(coupon, 1).await;
    if Utc::now() >= opens {
        return None;
    }
    assert_problem(early, StatusCode::CONFLICT, "EVENT_NOT_OPEN").await;
    let state = eventually("the event to open", Duration::from_secs(30), || async {
        let state = app.coupon_json(coupon).await["state"].clone();
        (state != "SCHEDULED").then_some(state)
    })
    .await;
    let admitted = app.apply(coupon, 1).await.status();
    if state != "OPEN" || Utc::now() >= closes {
        return None;
    }
    assert_eq!(admitted, StatusCode::ACCEPTED);
    Some(coupon)
}

#[tokio::test]
async fn the_event_admits_once_open_and_refuses_once_closed() {
    // User 1 may apply on several events: no per-user limit.
    let app = spawn_app_with(|s| s.rate_limit.per_user_per_sec = 0).await;
    let mut lead = chrono::Duration::milliseconds(FIRST_LEAD_MS);
    let coupon = loop {
        if let Some(coupon) = refused_then_admitted(&app, lead).await {
            break coupon;
        }
        lead = lead * 2;
        assert!(
            lead <= MAX_LEAD,
            "never answered within {lead} of a boundary"
        );
    };

    eventually("the event to close", Duration::from_secs(30), || async {
        (app.coupon_json(coupon).await["state"] == "CLOSED").then_some(())
    })
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
    // Arrange: an event that closed, with user 1 admitted before it did, and an application
    // that saw it closed. User 1 may apply on several events: no per-user limit.
    let app = spawn_app_with(|s| s.rate_limit.per_user_per_sec = 0).await;
    let mut lead = chrono::Duration::milliseconds(FIRST_LEAD_MS);
    let coupon = loop {
        let closes = Utc::now() + lead;
        let coupon = app
            .create_coupon(json!({"name": "Gone", "stock": 10, "closesAt": closes}))
            .await;
        let first = app.apply(coupon, 1).await.status();
        if Utc::now() < closes {
            assert_eq!(first, StatusCode::ACCEPTED);
            break coupon;
        }
        lead = lead * 2;
        assert!(
            lead <= MAX_LEAD,
            "never answered within {lead} of the close"
        );
    };
    eventually("the event closed", Duration::from_secs(30), || async {
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
