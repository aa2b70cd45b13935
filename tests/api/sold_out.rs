//! The sold-out latch (gate::latch, gate::losers): a sold-out event's losers are answered, and
//! their positions read, without Redis, and still counted; a latch stands aside while its event
//! is held, and the winners the instances told are put back by the restore.
//! One Redis only: the first test reaches it through a proxy it cuts.

use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    eventually, isolated_settings, spawn_app_behind_redis_proxy, start, TestApp, MANUAL,
};

/// Waits until `app` answers `latched` sold-out events without Redis.
async fn until_latched(app: &TestApp, latched: f64) {
    eventually("the sold-out latch", Duration::from_secs(10), || async {
        (app.metric("fcfs_sold_out_latched").await == latched).then_some(())
    })
    .await;
}

#[tokio::test]
async fn losers_of_a_sold_out_event_are_answered_without_redis_and_still_counted() {
    // Arrange: a sold-out event, Redis reached through a proxy the test can cut.
    let (proxy, app) = spawn_app_behind_redis_proxy(|s| s.issuer.schedule = MANUAL.into()).await;
    let coupon = app.create_stock(5).await;
    let statuses = app.apply_all(coupon, 1..=10, 10).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::GONE).count(),
        5
    );
    until_latched(&app, 1.0).await;
    let winners = app.admitted(coupon).await;
    let (winner, loser) = (winners[0], (1..=10).find(|u| !winners.contains(u)).unwrap());
    // One loser's position read: the instance keeps the event's numbers for a second.
    let seen: Value = app.position(coupon, loser).await.json().await.unwrap();

    // Act: Redis is cut; 20 losers poll their position, 20 more apply, and a winner does both.
    proxy.cut();
    let polls = join_all((100..120).map(|user| app.position(coupon, user))).await;
    let losers = app.apply_all(coupon, 100..120, 20).await;
    let winners_apply = app.apply(coupon, winner).await.status();
    let winners_poll = app.position(coupon, winner).await.status();
    proxy.restore();

    // Assert: the losers were answered SOLD_OUT without Redis, their polls with the numbers
    // read before; the winner, whose answers carry their current status, needed Redis; every
    // application answered is counted within a second.
    for poll in polls {
        assert_eq!(poll.status(), StatusCode::OK);
        let body: Value = poll.json().await.unwrap();
        assert_eq!(body["status"], "SOLD_OUT", "{body}");
        for field in ["couponId", "stock", "admitted", "issued"] {
            assert_eq!(body[field], seen[field], "{field}: {body}");
        }
    }
    assert!(losers.iter().all(|s| *s == StatusCode::GONE), "{losers:?}");
    assert_eq!(winners_apply, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(winners_poll, StatusCode::SERVICE_UNAVAILABLE);
    eventually("every answer counted", Duration::from_secs(10), || async {
        (app.applications(coupon).await == 30).then_some(())
    })
    .await;
    assert_eq!(app.admitted(coupon).await.len(), 5);
}

#[tokio::test]
async fn a_held_event_drops_every_latch_and_its_restore_keeps_the_winners_told() {
    // Arrange: two instances, both latched on a sold-out event whose winners were never
    // published (the issuer runs only by hand).
    let mut settings = isolated_settings();
    settings.issuer.schedule = MANUAL.into();
    settings.issuer.lease_ms = 3_000;
    // Applicants ask again through the hold's 503s.
    settings.rate_limit.per_user_per_sec = 0;
    let a = start(settings.clone()).await;
    let b = start(settings).await;
    let coupon = a.create_stock(5).await;
    let mut first = a.apply_all(coupon, 1..=8, 8).await;
    first.extend(b.apply_all(coupon, 11..=18, 8).await);
    let winners_before = a.queue(coupon).await;
    until_latched(&a, 1.0).await;
    until_latched(&b, 1.0).await;

    // Act: Redis loses the event. PostgreSQL has no winner of it; the instances remember the
    // tickets they told.
    a.wipe_redis().await;

    // Assert: both instances dropped their latch while it was held; the restore put the five
    // winners back at their places, so the event is sold out again for everyone else.
    until_latched(&a, 0.0).await;
    until_latched(&b, 0.0).await;
    for (app, user) in [(&a, 50), (&b, 51)] {
        let outcome = app
            .apply_through_outage(coupon, user, Duration::from_secs(30))
            .await;
        assert_eq!(
            outcome.status,
            StatusCode::GONE,
            "user {user} on an instance"
        );
    }
    let winners_after: Vec<i64> = a.admitted(coupon).await;
    let winners_before: Vec<i64> = winners_before.into_iter().map(|(u, _)| u).collect();
    assert_eq!(
        winners_after, winners_before,
        "the winners told, in their order"
    );
    assert_eq!(
        first.iter().filter(|s| **s == StatusCode::ACCEPTED).count(),
        5
    );
}
