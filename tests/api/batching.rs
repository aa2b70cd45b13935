//! Batched admission (`APP_GATE__BATCH_*`): the guarantees hold with applications decided many
//! to a script call, across instances that batch at the same time, and a failed call is every
//! member's failure, never a double admission. Runs against one Redis and, with
//! `APP_REDIS__MODE=cluster` (scripts/test.sh), against the cluster.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fcfs_coupon::configuration::GateSettings;
use fcfs_coupon::domain::{CouponId, UserId};
use fcfs_coupon::gate::{Admission, Ticket};
use futures::future::join_all;
use futures::{stream, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    eventually, isolated_settings, spawn_app, spawn_app_behind_redis_proxy, start, TestApp,
};
use crate::issuance::assert_issued_exactly;

/// One application as its client saw it.
#[derive(Debug, Clone, Copy)]
struct Answer {
    user: i64,
    status: StatusCode,
    position: Option<i64>,
    sent: Instant,
    answered: Instant,
}

/// Each user applies `times` times, 96 applications at once: user u's k-th application goes to
/// instance (u + k / 2) mod N, so a user's first two arrive at one instance together (often in
/// one batch) and a third at another.
async fn crowd(apps: &[TestApp], coupon: i64, users: &[i64], times: usize) -> Vec<Answer> {
    let applications = users
        .iter()
        .flat_map(|u| (0..times).map(move |k| (*u, (*u as usize + k / 2) % apps.len())));
    stream::iter(applications)
        .map(|(user, instance)| async move {
            let sent = Instant::now();
            let resp = apps[instance].apply(coupon, user).await;
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or_default();
            Answer {
                user,
                status,
                position: body["position"].as_i64(),
                sent,
                answered: Instant::now(),
            }
        })
        .buffer_unordered(96)
        .collect()
        .await
}

/// Applications sent to Redis by this instance, and the script calls that carried them.
async fn batches(app: &TestApp) -> (f64, f64) {
    (
        app.metric("fcfs_apply_batch_size_sum").await,
        app.metric("fcfs_apply_batch_size_count").await,
    )
}

#[tokio::test]
async fn three_instances_batching_at_once_keep_the_cap_one_per_user_and_real_time_order() {
    // Arrange: three instances whose batches wait up to 2 ms, so they surely form and overlap.
    let mut settings = isolated_settings();
    settings.gate.batch_window_us = 2_000;
    settings.gate.batch_max = 16;
    let apps = [
        start(settings.clone()).await,
        start(settings.clone()).await,
        start(settings).await,
    ];
    let coupon = apps[0].create_stock(200).await;
    let users: Vec<i64> = (1..=600).collect();

    // Act: 600 users apply three times each, twice at once on one instance.
    let answers = crowd(&apps, coupon, &users, 3).await;

    // Assert: every application answered, exactly 200 newly admitted, one per user.
    let by_status = |s: StatusCode| answers.iter().filter(|a| a.status == s).count();
    let admitted: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.status == StatusCode::ACCEPTED)
        .collect();
    assert_eq!(admitted.len(), 200);
    assert_eq!(
        admitted.len() + by_status(StatusCode::OK) + by_status(StatusCode::GONE),
        1_800,
        "only 202, 200 and 410: {answers:?}"
    );
    let told: BTreeMap<i64, i64> = admitted
        .iter()
        .map(|a| (a.user, a.position.unwrap()))
        .collect();
    assert_eq!(told.len(), 200, "no user admitted twice");
    // A re-application tells the winner their own position, whichever instance answers.
    for again in answers.iter().filter(|a| a.status == StatusCode::OK) {
        assert_eq!(Some(told[&again.user]), again.position);
    }
    // Real-time order: an answer received before another request was sent has the smaller
    // position (batching may reorder only applications that overlapped in time).
    let mut tickets: Vec<&Answer> = answers.iter().filter(|a| a.position.is_some()).collect();
    tickets.sort_by_key(|a| a.position);
    for (i, behind) in tickets.iter().enumerate() {
        for ahead in tickets[..i].iter().filter(|a| a.user != behind.user) {
            assert!(
                behind.answered >= ahead.sent,
                "position {:?} was answered before position {:?} was asked",
                behind.position,
                ahead.position
            );
        }
    }
    // Evidence: batches of more than one application went to Redis from every instance.
    for app in &apps {
        let (applications, calls) = batches(app).await;
        assert!(
            calls > 0.0 && applications > calls,
            "{applications} in {calls}"
        );
    }
    apps[0].wait_for_rows(coupon, 200).await;
    assert_issued_exactly(&apps[0], coupon, &told, 200).await;
}

#[tokio::test]
async fn applications_that_arrive_together_are_decided_in_the_order_they_arrived() {
    // Arrange: a batching gate of this test's own (the test runtime has one thread, so the
    // applications below reach the gate in the order they are polled: 1, 2, …, 16, before any
    // call is sent).
    let app = spawn_app().await;
    let coupon = app.create_stock(100).await;
    let gate = (app.settings.redis.gate().unwrap()).with_batching(&GateSettings {
        batch_window_us: 5_000,
        batch_max: 64,
    });
    let id = CouponId::new(coupon).unwrap();

    // Act
    let admissions =
        join_all((1..=16).map(|user| gate.apply(id, UserId::new(user).unwrap()))).await;

    // Assert: positions in arrival order. The first found the event idle and left alone at
    // once; the other 15 waited for its call and went together: the scores of one script call
    // (one clock reading, then one µs apart).
    let tickets: Vec<Ticket> = admissions
        .into_iter()
        .map(|a| match a.unwrap() {
            Admission::Admitted { ticket, .. } => ticket,
            other => panic!("{other:?}"),
        })
        .collect();
    let positions: Vec<u32> = tickets.iter().map(|t| t.position.get()).collect();
    assert_eq!(positions, (1..=16).collect::<Vec<_>>());
    let scores: Vec<i64> = tickets
        .iter()
        .map(|t| t.applied_at.timestamp_micros())
        .collect();
    assert!(scores[0] < scores[1]);
    assert_eq!(scores[1..], (scores[1]..scores[1] + 15).collect::<Vec<_>>());
    assert_eq!(app.admitted(coupon).await, (1..=16).collect::<Vec<i64>>());
    // Every call is over: the gate keeps no state for the event.
    eventually(
        "the event's lane forgotten",
        Duration::from_secs(30),
        || async { (gate.batching_events() == 0).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_batch_whose_call_fails_answers_every_member_503_and_a_retry_admits_none_twice() {
    // Arrange: Redis acts on requests but its replies are held past the gate's timeout.
    let (proxy, app) = spawn_app_behind_redis_proxy(|s| {
        s.gate.batch_window_us = 5_000;
        s.gate.batch_max = 64;
    })
    .await;
    let coupon = app.create_stock(25).await;
    // The script is loaded (a held NOSCRIPT reply would keep it from running at all).
    assert_eq!(
        app.apply(coupon, 1_000).await.status(),
        StatusCode::ACCEPTED
    );
    let users: Vec<i64> = (1..=24).collect();
    let (warm_up, _) = batches(&app).await;
    proxy.hold_replies();

    // Act: 24 applications at once; then the link comes back and everyone asks again.
    let failed = crowd(std::slice::from_ref(&app), coupon, &users, 1).await;
    proxy.restore();
    let (applications, calls) = batches(&app).await;
    let retried = crowd(std::slice::from_ref(&app), coupon, &users, 1).await;

    // Assert: every member of every failed call was told 503, none a ticket.
    assert!(
        failed
            .iter()
            .all(|a| a.status == StatusCode::SERVICE_UNAVAILABLE),
        "{failed:?}"
    );
    // Sent in fewer calls than applications: batches failed, not only single calls.
    let applications = applications - warm_up;
    assert_eq!(
        (applications, calls - 1.0 < applications),
        (24.0, true),
        "{calls} calls"
    );
    // Redis admitted them all when the requests reached it, once each: the retry is told the
    // ticket it already had (200), at positions exactly 2..=25.
    let mut positions: Vec<i64> = retried.iter().map(|a| a.position.unwrap()).collect();
    positions.sort();
    assert_eq!(positions, (2..=25).collect::<Vec<_>>());
    assert!(
        retried.iter().all(|a| a.status == StatusCode::OK),
        "{retried:?}"
    );
    assert_eq!(app.admitted(coupon).await.len(), 25);
    let mut told: BTreeMap<i64, i64> = retried
        .iter()
        .map(|a| (a.user, a.position.unwrap()))
        .collect();
    told.insert(1_000, 1);
    app.wait_for_rows(coupon, 25).await;
    assert_issued_exactly(&app, coupon, &told, 25).await;
}

#[tokio::test]
async fn a_batch_no_replica_confirmed_fails_its_tickets_only_and_its_losers_keep_their_answers() {
    // Arrange: an event of 2, and a batching gate that requires more replicas than any Redis
    // here has (one server, or the test cluster's masters with one or two each). The test
    // runtime has one thread: user 1 finds the event idle and goes alone, users 2..=5 go
    // together behind it.
    let app = spawn_app().await;
    let coupon = app.create_stock(2).await;
    let mut redis = app.settings.redis.clone();
    redis.ack_replicas = 9;
    redis.ack_timeout_ms = 200;
    let gate = redis.gate().unwrap().with_batching(&GateSettings {
        batch_window_us: 5_000,
        batch_max: 64,
    });
    let id = CouponId::new(coupon).unwrap();

    // Act
    let answers = join_all((1..=5).map(|user| gate.apply(id, UserId::new(user).unwrap()))).await;

    // Assert: the two winners' tickets are written but unconfirmed (503 to them); the three
    // losers of the second call were told SOLD_OUT without waiting on the replicas' verdict.
    let outcome: Vec<String> = answers
        .iter()
        .map(|a| match a {
            Ok(admission) => format!("{admission:?}"),
            Err(e) => format!("{e}"),
        })
        .collect();
    let unconfirmed = "the write is not confirmed by the replicas";
    assert_eq!(
        outcome,
        [unconfirmed, unconfirmed, "SoldOut", "SoldOut", "SoldOut"],
        "{answers:?}"
    );
    assert_eq!(app.admitted(coupon).await, [1, 2]);
}
