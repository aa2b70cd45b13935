//! Redis losing or regressing its state while the service runs: no restart. Each test asserts
//! that the event was held (503 with `Retry-After`, never 404), restored from PostgreSQL, and
//! ends settled with exactly the positions clients were told.

use std::time::{Duration, Instant};

use fcfs_coupon::configuration::Settings;
use futures::{stream, StreamExt};
use reqwest::StatusCode;

use crate::helpers::{
    assert_final, assert_settled_as_told, eventually, spawn_app_with, start, ticker, told,
    DurableBroker, Outcome, TestApp, MANUAL,
};

/// The issuer ticks when the test says (or its ticker runs); a short lease keeps the wait for
/// in-flight sends (two thirds of it) short; the clients below re-apply freely.
fn controlled(s: &mut Settings) {
    s.issuer.schedule = MANUAL.into();
    s.issuer.lease_ms = 3_000;
    s.rate_limit.per_user_per_sec = 0;
}

/// Every user applies through any outage, `concurrency` at a time.
async fn crowd(
    app: &TestApp,
    coupon: i64,
    users: impl IntoIterator<Item = i64>,
    concurrency: usize,
) -> Vec<Outcome> {
    stream::iter(users)
        .map(|user| app.apply_through_outage(coupon, user, Duration::from_secs(60)))
        .buffer_unordered(concurrency)
        .collect()
        .await
}

fn count(outcomes: &[Outcome], status: StatusCode) -> usize {
    outcomes.iter().filter(|o| o.status == status).count()
}

#[tokio::test]
async fn keys_wiped_mid_spike_hold_the_event_and_restore_it_without_a_restart() {
    // Arrange: 100 winners admitted and published (the consumer may not have persisted them
    // all yet), then every key of the service is deleted, as a Redis restart without
    // persistence would leave it.
    // Two instances, both watching: both notice and hold, exactly one restores.
    let app = spawn_app_with(controlled).await;
    let other = start(app.settings.clone()).await;
    let coupon = app.create_stock(200).await;
    let (mut first, half) = tokio::join!(
        crowd(&app, coupon, 1..=50, 16),
        crowd(&other, coupon, 51..=100, 16)
    );
    first.extend(half);
    assert_eq!(count(&first, StatusCode::ACCEPTED), 100);
    assert_eq!(app.issuer().run_once().await.unwrap().published, 100);
    let ticks = ticker(app.issuer());
    app.wipe_redis().await;
    let wiped = Instant::now();

    // Act: the earlier winners ask again and 300 newcomers arrive, through the hold.
    let again = crowd(&other, coupon, 1..=100, 32);
    let newcomers = crowd(&app, coupon, 101..=400, 64);
    let (again, newcomers) = tokio::join!(again, newcomers);

    // Assert: the event was held (503, never 404 or 500), then served again.
    let all: Vec<Outcome> = again.iter().chain(&newcomers).copied().collect();
    assert!(
        all.iter().any(|o| o.unavailable > 0),
        "nobody met the hold: the wipe was not noticed"
    );
    assert_final(&all);
    let recovered = all.iter().map(|o| o.answered).min().unwrap() - wiped;
    eprintln!("FIGURE wipe: first answer {recovered:.1?} after the keys were deleted");
    let held = "fcfs_coupons_held_total{reason=\"missing\"}";
    assert!(app.metric(held).await + other.metric(held).await >= 1.0);
    let restored = "fcfs_coupons_restored_total";
    assert_eq!(
        app.metric(restored).await + other.metric(restored).await,
        1.0,
        "exactly one instance restored the coupon"
    );

    // Every earlier winner keeps the place told; newcomers continue after the last one.
    assert_eq!(told(&again), told(&first));
    assert_eq!(count(&newcomers, StatusCode::ACCEPTED), 100);
    assert_eq!(count(&newcomers, StatusCode::GONE), 200);
    let mut positions: Vec<i32> = told(&newcomers).into_values().collect();
    positions.sort_unstable();
    assert_eq!(positions, (101..=200).collect::<Vec<_>>());

    let mut everyone = told(&first);
    everyone.extend(told(&newcomers));
    let rows = assert_settled_as_told(&app, coupon, 200, &everyone).await;
    assert_eq!(rows.len(), 200);
    ticks.abort();
}

#[tokio::test]
async fn a_regression_below_the_persisted_positions_is_detected_and_restored() {
    // Arrange: ten winners persisted; then Redis loses the last two admissions, as a failover
    // to a replica that missed them (or an AOF that lost its last second) would.
    let app = spawn_app_with(controlled).await;
    let coupon = app.create_stock(20).await;
    let first = crowd(&app, coupon, 1..=10, 10).await;
    assert_eq!(count(&first, StatusCode::ACCEPTED), 10);
    assert_eq!(app.issuer().run_once().await.unwrap().published, 10);
    app.wait_for_rows(coupon, 10).await;

    let keys = app.keys(coupon);
    let mut redis = app.redis.clone();
    let eighth: Vec<String> = redis::cmd("ZRANGE")
        .arg(&keys.queue)
        .arg(7)
        .arg(7)
        .arg("WITHSCORES")
        .query_async(&mut redis)
        .await
        .unwrap();
    let lost: Vec<i64> = first
        .iter()
        .filter(|o| o.position >= Some(9))
        .map(|o| o.user)
        .collect();
    assert_eq!(lost.len(), 2);
    let _: () = redis::pipe()
        .zrem(&keys.queue, &lost)
        .hdel(&keys.status, &lost)
        .set(&keys.seq, &eighth[1])
        .query_async(&mut redis)
        .await
        .unwrap();
    let regressed = Instant::now();

    // Act + Assert: the regression is noticed (the hold answers 503 to a position read).
    let lost_user = lost[0];
    eventually("the regression held", Duration::from_secs(10), || async {
        (app.position(coupon, lost_user).await.status() == StatusCode::SERVICE_UNAVAILABLE)
            .then_some(())
    })
    .await;
    eprintln!(
        "FIGURE regression: held {:.1?} after it happened",
        regressed.elapsed()
    );
    assert_eq!(
        app.metric("fcfs_coupons_held_total{reason=\"regressed\"}")
            .await,
        1.0
    );

    // Newcomers continue after the persisted positions; the lost winners keep theirs.
    let ticks = ticker(app.issuer());
    let newcomers = crowd(&app, coupon, 11..=12, 2).await;
    let mut positions: Vec<i32> = told(&newcomers).into_values().collect();
    positions.sort_unstable();
    assert_eq!(positions, [11, 12]);
    let again = crowd(&app, coupon, lost.iter().copied(), 2).await;
    assert_eq!(
        told(&again),
        told(&first)
            .into_iter()
            .filter(|(u, _)| lost.contains(u))
            .collect()
    );

    let mut everyone = told(&first);
    everyone.extend(told(&newcomers));
    let rows = assert_settled_as_told(&app, coupon, 20, &everyone).await;
    assert_eq!(rows.len(), 12, "no FAILED winner: every one persisted");
    ticks.abort();
}

#[tokio::test]
async fn a_restore_waits_for_sends_in_flight_when_the_state_was_lost() {
    // Arrange: ten winners claimed by the issuer, whose sends stall (the broker link held):
    // they are in flight when Redis loses every key.
    let broker = DurableBroker::behind_proxy().await;
    let app = spawn_app_with(|s| {
        controlled(s);
        s.kafka.brokers = broker.address();
    })
    .await;
    let coupon = app.create_stock(20).await;
    let first = crowd(&app, coupon, 1..=10, 10).await;
    assert_eq!(count(&first, StatusCode::ACCEPTED), 10);
    broker.proxy().hold();
    let issuer = app.issuer().clone();
    let tick = tokio::spawn(async move { issuer.run_once().await });
    let keys = app.keys(coupon);
    let redis = app.redis.clone();
    eventually("ten claims in flight", Duration::from_secs(10), || {
        let (mut redis, inflight) = (redis.clone(), keys.inflight.clone());
        async move {
            let claimed: u64 = redis::cmd("ZCARD")
                .arg(inflight)
                .query_async(&mut redis)
                .await
                .unwrap();
            (claimed == 10).then_some(())
        }
    })
    .await;
    app.wipe_redis().await;

    // Act: the link comes back once the watcher has held the coupon, before the sends' timeout
    // (two seconds): a restore that read PostgreSQL now would find nobody.
    eventually("the coupon held", Duration::from_secs(10), || {
        let (mut redis, meta) = (redis.clone(), keys.meta.clone());
        async move {
            let held: bool = redis::cmd("HEXISTS")
                .arg(meta)
                .arg("recovering")
                .query_async(&mut redis)
                .await
                .unwrap();
            held.then_some(())
        }
    })
    .await;
    assert!(
        app.issued_rows(coupon).await.is_empty(),
        "nothing persisted when the state was lost"
    );
    broker.proxy().restore();
    let report = tick.await.unwrap().unwrap();
    assert_eq!(report.published, 10, "the stalled sends landed");

    // Assert: the published winners keep their places; newcomers continue after them.
    let ticks = ticker(app.issuer());
    let newcomers = crowd(&app, coupon, 11..=30, 20).await;
    let mut positions: Vec<i32> = told(&newcomers).into_values().collect();
    positions.sort_unstable();
    assert_eq!(positions, (11..=20).collect::<Vec<_>>());
    let again = crowd(&app, coupon, 1..=10, 10).await;
    assert_eq!(told(&again), told(&first));
    let mut everyone = told(&first);
    everyone.extend(told(&newcomers));
    let rows = assert_settled_as_told(&app, coupon, 20, &everyone).await;
    assert_eq!(rows.len(), 20);
    ticks.abort();
}
