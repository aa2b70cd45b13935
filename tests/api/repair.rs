//! Holes in the bookkeeping around the gate, each closed: an event that fell off the issuer's
//! registry, a creation whose Redis copy half-happened, a restore racing a newer hold, a count
//! whose reply was lost.

use std::time::Duration;

use fcfs_coupon::domain::{CouponId, UserId};
use fcfs_coupon::gate::HoldReason;
use fcfs_coupon::store;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    assert_problem, assert_settled, eventually, postgres_address, redis_address, spawn_app,
    spawn_app_behind_redis_proxy, spawn_app_with, through_proxy, TcpProxy, MANUAL,
};

#[tokio::test]
async fn an_event_missing_from_the_issuer_registry_is_put_back_and_every_winner_issued() {
    // Arrange: a live event with five winners persisted, then its registry entry is lost (a
    // failover that kept the event's keys but not the registry, or a lost SADD).
    let app = spawn_app_with(|s| s.rate_limit.per_user_per_sec = 0).await;
    let coupon = app.create_stock(60).await;
    for user in 1..=5 {
        assert_eq!(app.apply(coupon, user).await.status(), StatusCode::ACCEPTED);
    }
    app.wait_for_rows(coupon, 5).await;
    let registry = format!("{}:coupons", app.settings.redis.key_prefix);
    let removed: i64 = redis::cmd("SREM")
        .arg(&registry)
        .arg(coupon)
        .query_async(&mut app.redis.clone())
        .await
        .unwrap();
    assert_eq!(removed, 1);

    // Act: fifty more are told they are in.
    for user in 6..=55 {
        assert_eq!(app.apply(coupon, user).await.status(), StatusCode::ACCEPTED);
    }

    // Assert: every one of the 55 is issued, at the place told (positions 1..=55).
    let rows = assert_settled(&app, coupon, 60).await;
    assert_eq!(rows.len(), 55);
    assert!(app.metric("fcfs_registry_repairs_total").await >= 1.0);
}

#[tokio::test]
async fn a_creation_whose_redis_copy_half_happened_leaves_no_event_that_admits() {
    // Arrange: the service's Redis login may do everything but SADD, so a creation writes the
    // event's definition and then fails to put it on the issuer's registry.
    let user = format!("fcfs-test-{}", uuid::Uuid::new_v4().simple());
    let mut admin = redis::Client::open(format!("redis://{}", redis_address()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", &user, "on", ">pw", "~*", "&*", "+@all", "-sadd"][..])
        .query_async(&mut admin)
        .await
        .unwrap();
    let app = spawn_app_with(|s| {
        s.redis.url = format!("redis://{user}:pw@{}", redis_address()).into();
    })
    .await;

    // Act: the creation fails after the definition was written.
    let resp = app
        .post_coupon(
            Some(&app.admin_token()),
            &serde_json::json!({"name": "Half", "stock": 5}),
        )
        .await;

    // Assert: no row, and the copy Redis kept admits nobody (503, never 202) and expires.
    assert!(resp.status().is_server_error(), "{}", resp.status());
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM coupon")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 0, "the row was rolled back");
    let metas: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*:meta", app.settings.redis.key_prefix))
        .query_async(&mut app.redis.clone())
        .await
        .unwrap();
    assert_eq!(metas.len(), 1, "the half-written copy: {metas:?}");
    let id: i64 = metas[0]
        .split("{c")
        .nth(1)
        .unwrap()
        .split('}')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let resp = app.apply(id, 1).await;
    assert_problem(resp, StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE").await;
    let ttl: i64 = redis::cmd("TTL")
        .arg(&metas[0])
        .query_async(&mut app.redis.clone())
        .await
        .unwrap();
    assert!(ttl > 0, "the orphan expires by itself (TTL {ttl})");
    let _: () = redis::cmd("ACL")
        .arg(&["DELUSER", &user][..])
        .query_async(&mut admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_restore_lifts_only_the_hold_it_waited_for() {
    // Arrange: an event held (h1), restored by another instance, then held again (h2).
    let app = spawn_app_with(|s| s.issuer.schedule = MANUAL.into()).await;
    let coupon = app.create_stock(5).await;
    let id = CouponId::new(coupon).unwrap();
    let event = store::find_coupon(&app.db, id).await.unwrap().unwrap();
    let first = app
        .gate
        .hold(id, HoldReason::Regressed)
        .await
        .unwrap()
        .unwrap();
    assert!(app
        .gate
        .restore(&event, &first, 0, &[])
        .await
        .unwrap()
        .is_some());
    let second = app
        .gate
        .hold(id, HoldReason::Regressed)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(first, second);

    // Act: a task that waited out the first hold restores late.
    let late = app.gate.restore(&event, &first, 0, &[]).await.unwrap();

    // Assert: it did nothing; the newer hold stands (applications answer 503).
    assert!(
        late.is_none(),
        "a restore lifted a hold it did not wait for"
    );
    let resp = app.apply(coupon, 1).await;
    assert_problem(resp, StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE").await;
    assert!(app
        .gate
        .restore(&event, &second, 0, &[])
        .await
        .unwrap()
        .is_some());
    assert_eq!(app.apply(coupon, 1).await.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn an_addition_to_the_application_count_whose_reply_was_lost_counts_once() {
    // Arrange: three applications answered by a gate, counted in its memory.
    let (proxy, app) = spawn_app_behind_redis_proxy(|s| s.issuer.schedule = MANUAL.into()).await;
    let coupon = app.create_stock(5).await;
    let id = CouponId::new(coupon).unwrap();
    let apply = |user| app.gate.apply(id, UserId::new(user).unwrap());
    apply(1).await.unwrap();
    app.gate.flush_counts().await; // the script is loaded: the next addition runs at once
    apply(2).await.unwrap();
    apply(3).await.unwrap();

    // Act: the addition reaches Redis but its reply does not; it is sent again later.
    proxy.hold_replies();
    app.gate.flush_counts().await;
    proxy.restore();
    app.gate.flush_counts().await;

    // Assert: counted once.
    eventually("the count", Duration::from_secs(30), || async {
        (app.applications(coupon).await == 3).then_some(())
    })
    .await;
    app.gate.flush_counts().await;
    assert_eq!(app.applications(coupon).await, 3);
}

#[tokio::test]
async fn shared_limits_above_a_million_per_second_are_refused_at_start() {
    let app = spawn_app().await;
    let mut settings = app.settings.clone();
    settings.rate_limit.per_user_per_sec = 1_000_001;
    let refused = settings.check().unwrap_err().to_string();
    assert!(
        refused.contains("APP_RATE_LIMIT__PER_USER_PER_SEC"),
        "{refused}"
    );
    settings.rate_limit.per_user_per_sec = 1_000_000;
    settings.check().unwrap();
    let body: Value = app.coupon_json(app.create_stock(1).await).await;
    assert_eq!(body["stock"], 1);
}

#[tokio::test]
async fn a_sold_out_latch_the_watcher_stopped_confirming_falls_back_to_redis() {
    // Arrange: a sold-out event latched on the instance; then the watcher stalls (PostgreSQL
    // stops answering) and, unseen by it, the event is held in Redis.
    let postgres = TcpProxy::start(postgres_address()).await;
    let app = spawn_app_with(|s| {
        through_proxy(s, postgres.port);
        s.rate_limit.per_user_per_sec = 0;
    })
    .await;
    let coupon = app.create_stock(2).await;
    for user in 1..=2 {
        assert_eq!(app.apply(coupon, user).await.status(), StatusCode::ACCEPTED);
    }
    assert_eq!(app.apply(coupon, 3).await.status(), StatusCode::GONE);
    eventually("the latch", Duration::from_secs(10), || async {
        (app.metric("fcfs_sold_out_latched").await == 1.0).then_some(())
    })
    .await;
    postgres.hold();
    let _: () = redis::cmd("HSET")
        .arg(app.keys(coupon).meta)
        .arg("recovering")
        .arg("held-by-the-test")
        .query_async(&mut app.redis.clone())
        .await
        .unwrap();

    // Act + Assert: within seconds the loser is answered by Redis again (503: held), not by a
    // latch nobody confirms any more.
    eventually(
        "the latch standing aside",
        Duration::from_secs(15),
        || async {
            (app.apply(coupon, 3).await.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(())
        },
    )
    .await;
    postgres.restore();
}
