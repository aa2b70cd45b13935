use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::{stream, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{assert_problem, redis_address, spawn_app_with, TcpProxy, MANUAL};

const WORKERS: usize = 64;

#[tokio::test]
async fn a_thousand_users_race_for_a_hundred_coupons() {
    // Arrange: the issuer stays still, so the gate's own writes can be inspected.
    let app = spawn_app_with(|s| s.issuer.schedule = MANUAL.into()).await;
    let coupon = app.create_stock(100).await;
    let users: Vec<i64> = (1_000..2_000).collect();
    let tokens: Vec<(i64, String)> = users.iter().map(|&u| (u, app.user_token(u))).collect();

    // Act: 1000 distinct users at once, WORKERS requests in flight.
    let started = Instant::now();
    let answers: Vec<(i64, StatusCode, Value)> = stream::iter(tokens)
        .map(|(user, token)| {
            let app = &app;
            async move {
                let resp = app.apply_with(&coupon.to_string(), Some(&token)).await;
                let status = resp.status();
                (user, status, resp.json::<Value>().await.unwrap())
            }
        })
        .buffer_unordered(WORKERS)
        .collect()
        .await;
    let elapsed = started.elapsed();
    eprintln!(
        "apply throughput: {:.0} requests/s ({} requests, {WORKERS} in flight, {elapsed:.2?})",
        answers.len() as f64 / elapsed.as_secs_f64(),
        answers.len()
    );

    // Assert: exactly 100 in, positions exactly 1..=100, everyone else SOLD_OUT.
    let winners: BTreeMap<i64, i64> = answers
        .iter()
        .filter(|(_, status, _)| *status == StatusCode::ACCEPTED)
        .map(|(user, _, body)| {
            assert_eq!(body["userId"], *user);
            assert_eq!(body["status"], "ADMITTED");
            (body["position"].as_i64().unwrap(), *user)
        })
        .collect();
    assert_eq!(winners.len(), 100, "exactly 100 distinct positions");
    assert_eq!(
        winners.keys().copied().collect::<Vec<_>>(),
        (1..=100).collect::<Vec<_>>()
    );
    let losers: Vec<_> = answers
        .iter()
        .filter(|(_, s, _)| *s == StatusCode::GONE)
        .collect();
    assert_eq!(losers.len(), 900);
    for (_, _, body) in losers {
        assert_eq!(body["code"], "SOLD_OUT");
    }

    // The positions follow the scores in Redis, which strictly increase.
    let queue = app.queue(coupon).await;
    assert_eq!(queue.len(), 100);
    for (i, (user, score)) in queue.iter().enumerate() {
        assert_eq!(
            winners[&(i as i64 + 1)],
            *user,
            "position {} is not rank {}",
            i + 1,
            i
        );
        if i > 0 {
            assert!(*score > queue[i - 1].1, "scores must strictly increase");
        }
    }
    let pending: i64 = redis::cmd("LLEN")
        .arg(app.pending_key(coupon))
        .query_async(&mut app.redis.clone())
        .await
        .unwrap();
    assert_eq!(pending, 100, "every winner is waiting for the issuer");

    let view = app.coupon_json(coupon).await;
    assert_eq!(view["admitted"], 100);
    assert_eq!(view["remaining"], 0);
    assert_eq!(view["state"], "SOLD_OUT");
}

#[tokio::test]
async fn a_user_is_admitted_once_however_often_they_apply() {
    // Arrange
    // The issuer stays still: these answers carry the current status. Each user applies 25
    // times at once, so the per-user bucket (tested in abuse.rs) is off.
    let app = spawn_app_with(|s| {
        s.issuer.schedule = MANUAL.into();
        s.rate_limit.per_user_per_sec = 0;
    })
    .await;
    let coupon = app.create_stock(100).await;
    let attempts: Vec<i64> = (1..=20)
        .flat_map(|user| std::iter::repeat_n(user, 25))
        .collect();

    // Act: 20 users × 25 concurrent applications each.
    let answers: Vec<(i64, StatusCode, Value)> = stream::iter(attempts)
        .map(|user| {
            let app = &app;
            async move {
                let resp = app.apply(coupon, user).await;
                let status = resp.status();
                (user, status, resp.json::<Value>().await.unwrap())
            }
        })
        .buffer_unordered(500)
        .collect()
        .await;

    // Assert: 20 admissions; each user always hears the same position.
    let created = answers
        .iter()
        .filter(|(_, s, _)| *s == StatusCode::ACCEPTED)
        .count();
    let repeated = answers
        .iter()
        .filter(|(_, s, _)| *s == StatusCode::OK)
        .count();
    assert_eq!((created, repeated), (20, 480));
    let mut position_of: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
    for (user, _, body) in &answers {
        position_of
            .entry(*user)
            .or_default()
            .insert(body["position"].as_i64().unwrap());
    }
    assert!(
        position_of.values().all(|p| p.len() == 1),
        "{position_of:?}"
    );
    let positions: BTreeSet<i64> = position_of.values().flatten().copied().collect();
    assert_eq!(positions, (1..=20).collect());
    assert_eq!(app.queue(coupon).await.len(), 20);

    // A later re-apply answers 200 with the same body as the first answer.
    for user in [1, 7, 20] {
        let first = answers
            .iter()
            .find(|(u, s, _)| *u == user && *s == StatusCode::ACCEPTED)
            .map(|(_, _, body)| body.clone())
            .unwrap();
        let again = app.apply(coupon, user).await;
        assert_eq!(again.status(), StatusCode::OK);
        assert_eq!(again.json::<Value>().await.unwrap(), first);
    }
    assert_eq!(app.coupon_json(coupon).await["admitted"], 20);
}

#[tokio::test]
async fn position_shows_each_applicant_where_they_stand() {
    // The issuer stays still: these answers carry the current status.
    let app = spawn_app_with(|s| s.issuer.schedule = MANUAL.into()).await;
    let coupon = app.create_stock(2).await;

    let before: Value = app.position(coupon, 5).await.json().await.unwrap();
    assert_eq!(before["status"], "NOT_APPLIED");
    assert_eq!(before["position"], Value::Null);
    assert_eq!(before["retryAfterMs"], Value::Null);

    let admitted: Value = app.apply(coupon, 5).await.json().await.unwrap();
    let winner: Value = app.position(coupon, 5).await.json().await.unwrap();
    assert_eq!(winner["status"], "ADMITTED");
    assert_eq!(winner["position"], 1);
    assert_eq!(winner["appliedAt"], admitted["appliedAt"]);
    assert_eq!(winner["stock"], 2);
    assert_eq!(winner["admitted"], 1);
    // Pollers are told the issuer's period, read from its schedule.
    let period = app.settings.issuer.period().unwrap().as_millis() as u64;
    assert_eq!(winner["retryAfterMs"], period);

    assert_eq!(app.apply(coupon, 6).await.status(), StatusCode::ACCEPTED);
    assert_problem(app.apply(coupon, 7).await, StatusCode::GONE, "SOLD_OUT").await;
    let loser: Value = app.position(coupon, 7).await.json().await.unwrap();
    assert_eq!(loser["status"], "SOLD_OUT");
    assert_eq!(loser["position"], Value::Null);
    assert_eq!(loser["admitted"], 2);
}

#[tokio::test]
async fn the_bulkhead_lets_only_its_share_into_a_slow_gate_and_answers_every_one_exactly() {
    // Arrange: Redis 20 ms away each way, two applications in the gate at a time.
    let redis = TcpProxy::start(redis_address()).await;
    let app = spawn_app_with(|s| {
        s.redis.url = format!("redis://{}", redis.address()).into();
        s.http.apply_concurrency = 2;
        s.issuer.schedule = MANUAL.into();
    })
    .await;
    let coupon = app.create_stock(10).await;
    redis.slow(Duration::from_millis(20));

    // Act: 100 at once, while the test watches how many are inside the gate.
    let done = AtomicBool::new(false);
    let applies = async {
        let statuses = app.apply_all(coupon, 1..=100, 100).await;
        done.store(true, Ordering::SeqCst);
        statuses
    };
    let watch = async {
        let mut most = 0.0f64;
        while !done.load(Ordering::SeqCst) {
            most = most.max(app.metric("fcfs_apply_in_flight").await);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        most
    };
    let (statuses, most_inside) = tokio::join!(applies, watch);

    // Assert: the gate was full but never over, and the 98 that waited got exact answers.
    assert_eq!(
        most_inside, 2.0,
        "at most apply_concurrency inside, and it was reached"
    );
    let admitted = statuses
        .iter()
        .filter(|s| **s == StatusCode::ACCEPTED)
        .count();
    let sold_out = statuses.iter().filter(|s| **s == StatusCode::GONE).count();
    assert_eq!((admitted, sold_out), (10, 90));
    assert_eq!(app.queue(coupon).await.len(), 10);
    assert_eq!(app.metric("fcfs_apply_in_flight").await, 0.0);
}
