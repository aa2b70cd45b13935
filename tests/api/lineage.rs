//! A confirmation is only true of the server that took the write: with
//! `APP_REDIS__ACK_REPLICAS=1`, an admission made on one master and "confirmed" on the server
//! that replaced it (a promoted replica, or the same address restarted empty) must not be 202.

use std::collections::BTreeMap;
use std::time::Duration;

use fcfs_coupon::startup::Role;
use reqwest::StatusCode;

use crate::helpers::{
    eventually, isolated_settings, spawn_app_with, start, start_roles, told, PrivateRedis,
    TcpProxy, MANUAL,
};

/// Settings whose "Redis" is a proxy in front of `server` (to be retargeted), the issuer ticked
/// by hand, a short lease, no rate limit.
async fn behind_a_proxy_to(
    server: &PrivateRedis,
) -> (TcpProxy, fcfs_coupon::configuration::Settings) {
    let proxy = TcpProxy::start(format!("127.0.0.1:{}", server.port)).await;
    let mut settings = isolated_settings();
    settings.redis.url = format!("redis://{}", proxy.address()).into();
    settings.issuer.schedule = MANUAL.into();
    settings.issuer.lease_ms = 3_000;
    settings.rate_limit.per_user_per_sec = 0;
    (proxy, settings)
}

/// One application sent on a task of its own; its status when answered.
fn apply_in_background(
    app: &crate::helpers::TestApp,
    coupon: i64,
    user: i64,
) -> tokio::task::JoinHandle<reqwest::Result<StatusCode>> {
    let request = app
        .client
        .post(app.url(&format!("/coupons/{coupon}/issue")))
        .bearer_auth(app.user_token(user));
    tokio::spawn(async move { request.send().await.map(|r| r.status()) })
}

/// `blocked_clients` of a server: a `WAIT` in progress there counts one.
async fn blocked(server: &PrivateRedis) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(&mut server.connection().await)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_default()
}

#[tokio::test]
async fn an_admission_is_never_confirmed_by_a_server_that_does_not_hold_it() {
    // Arrange: master M with replica R, and M2 with its own replica R2 (what a failover or a
    // restart behind the same address would put there). The service reaches "Redis" through a
    // proxy in front of M.
    let m = PrivateRedis::start().await;
    let r = PrivateRedis::start_with(&["--replicaof", "127.0.0.1", &m.port.to_string()]).await;
    let m2 = PrivateRedis::start().await;
    let _r2 = PrivateRedis::start_with(&["--replicaof", "127.0.0.1", &m2.port.to_string()]).await;
    let proxy = TcpProxy::start(format!("127.0.0.1:{}", m.port)).await;
    let app = spawn_app_with(|s| {
        s.redis.url = format!("redis://{}", proxy.address()).into();
        s.redis.ack_replicas = 1;
        s.redis.ack_timeout_ms = 1_500;
        s.redis.timeout_ms = 3_000;
        s.issuer.schedule = MANUAL.into();
        s.rate_limit.per_user_per_sec = 0;
    })
    .await;
    let coupon = app.create_stock(10).await;
    assert_eq!(app.apply(coupon, 1).await.status(), StatusCode::ACCEPTED);

    // R stops acknowledging: the confirmer's next WAIT on M blocks.
    r.pause();
    let first = apply_in_background(&app, coupon, 2);
    eventually("a WAIT blocked on M", Duration::from_secs(5), || async {
        (blocked(&m).await >= 1).then_some(())
    })
    .await;
    // User 3 is admitted on M while that WAIT runs: their confirmation is the next group's.
    let second = apply_in_background(&app, coupon, 3);
    let queue = app.keys(coupon).queue;
    eventually("user 3 admitted on M", Duration::from_secs(5), || async {
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(&queue)
            .arg(3)
            .query_async(&mut m.connection().await)
            .await
            .unwrap();
        score.map(|_| ())
    })
    .await;

    // Act: "Redis" is now M2 (M's writes are not there); every connection is re-made.
    proxy.retarget(format!("127.0.0.1:{}", m2.port));

    // Assert: neither admission is confirmed: M2 does not hold them, whatever R2 says.
    let first = first.await.unwrap().unwrap();
    let second = second.await.unwrap().unwrap();
    assert_eq!(first, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        second,
        StatusCode::SERVICE_UNAVAILABLE,
        "user 3 was told 202 for a write the confirming server does not have"
    );
    r.resume();
}

/// Every key of the coupon on `server` holds `recovering` (the event is held).
/// `REPLICAOF NO ONE`: the replica keeps what it has and takes nothing more from its master.
async fn stop_following(replica: &PrivateRedis) {
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut replica.connection().await)
        .await
        .unwrap();
}

async fn held_on(server: &PrivateRedis, meta: &str) -> bool {
    redis::cmd("HEXISTS")
        .arg(meta)
        .arg("recovering")
        .query_async(&mut server.connection().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_redis_that_lost_its_last_writes_while_every_instance_was_down_is_held_and_restored() {
    // Arrange: master M with replica M2; the service reaches "Redis" through a proxy, with
    // APP_REDIS__ACK_REPLICAS=0, and no consumer runs yet.
    let m = PrivateRedis::start().await;
    let m2 = PrivateRedis::start_with(&["--replicaof", "127.0.0.1", &m.port.to_string()]).await;
    let (proxy, settings) = behind_a_proxy_to(&m).await;
    let app = start_roles(settings.clone(), &[Role::Api, Role::Issuer]).await;
    let coupon = app.create_stock(20).await;
    let meta = app.keys(coupon).meta;
    let mut first = Vec::new();
    for user in 1..=5 {
        first.push(
            app.apply_through_outage(coupon, user, Duration::from_secs(10))
                .await,
        );
    }
    let queue = app.keys(coupon).queue;
    eventually(
        "M2 holds the first five",
        Duration::from_secs(10),
        || async {
            let n: i64 = redis::cmd("ZCARD")
                .arg(&queue)
                .query_async(&mut m2.connection().await)
                .await
                .unwrap();
            (n == 5).then_some(())
        },
    )
    .await;
    eventually(
        "the watcher recorded five positions",
        Duration::from_secs(10),
        || async {
            let high: i32 = sqlx::query_scalar("SELECT admitted_high FROM coupon WHERE id = $1")
                .bind(coupon)
                .fetch_one(&app.db)
                .await
                .unwrap();
            (high == 5).then_some(())
        },
    )
    .await;
    // M2 stops following M: what it will serve lacks whatever M takes from here on. Every
    // instance stops; five more are admitted on M and published by a bare gate and issuer, so
    // no watcher records their positions and no instance remembers telling them: only the
    // changed server says they may be gone.
    stop_following(&m2).await;
    let _isolation = app.stop().await;
    let gate = settings.redis.gate().unwrap();
    let id = fcfs_coupon::domain::CouponId::new(coupon).unwrap();
    let mut everyone = told(&first);
    for user in 6..=10 {
        let admission = gate
            .apply(id, fcfs_coupon::domain::UserId::new(user).unwrap())
            .await
            .unwrap();
        let fcfs_coupon::gate::Admission::Admitted { ticket, .. } = admission else {
            panic!("user {user}: {admission:?}")
        };
        everyone.insert(user, ticket.position.get() as i32);
    }
    let publisher =
        fcfs_coupon::kafka::Publisher::new(&settings.kafka, Duration::from_secs(2)).unwrap();
    let issuer = fcfs_coupon::issuer::Issuer::new(
        gate,
        publisher,
        settings.issuer.clone(),
        settings.claim_window(),
        fcfs_coupon::metrics::Metrics::new(),
    );
    assert_eq!(issuer.run_once().await.unwrap().published, 10);

    // Act: "Redis" comes back as M2 (positions 6..=10 published, not persisted, and gone from
    // it); the service starts again and newcomers arrive.
    proxy.retarget(format!("127.0.0.1:{}", m2.port));
    let app = start_roles(settings.clone(), &[Role::Api, Role::Issuer]).await;
    let newcomers = tokio::spawn({
        let app = start_roles(settings.clone(), &[Role::Api]).await;
        async move {
            let mut told = Vec::new();
            for user in 11..=15 {
                told.push(
                    app.apply_through_outage(coupon, user, Duration::from_secs(90))
                        .await,
                );
            }
            told
        }
    });
    eventually(
        "held, or the newcomers answered",
        Duration::from_secs(20),
        || async { (held_on(&m2, &meta).await || newcomers.is_finished()).then_some(()) },
    )
    .await;
    // The consumer starts only once a restore that did not wait for it would have run (the
    // settle: the claim window, 2 s, plus the send timeout, 2 s, plus 0.5 s).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let consumer = start(settings.clone()).await;

    // Assert: the newcomers continue after the ten told before, and every told place is a row.
    let newcomers = newcomers.await.unwrap();
    everyone.extend(told(&newcomers));
    let expected: BTreeMap<i64, i32> = (1..=15).map(|u| (u, u as i32)).collect();
    assert_eq!(everyone, expected, "positions told");
    assert_eq!(app.issuer().run_once().await.unwrap().published, 5);
    let rows = eventually("fifteen rows", Duration::from_secs(60), || async {
        let rows = consumer.issued_rows(coupon).await;
        (rows.len() >= 15).then_some(rows)
    })
    .await;
    let rows: BTreeMap<i64, i32> = rows.into_iter().collect();
    assert_eq!(rows, expected, "rows");
    assert_eq!(consumer.failed_events().await, 0);
    let status = eventually("user 8 ISSUED", Duration::from_secs(10), || async {
        let s = app.position_status(coupon, 8).await;
        (s == "ISSUED").then_some(s)
    })
    .await;
    assert_eq!(status, "ISSUED");
    app.assert_counted(coupon).await;
}

#[tokio::test]
async fn winners_a_redis_lost_before_they_were_published_are_put_back_by_the_instances_that_told_them(
) {
    // Arrange: two instances, APP_REDIS__ACK_REPLICAS=0, "Redis" behind a proxy. Four winners
    // published, six more told their place and not yet published.
    let m = PrivateRedis::start().await;
    let empty = PrivateRedis::start().await;
    let (proxy, settings) = behind_a_proxy_to(&m).await;
    let app = start(settings.clone()).await;
    let other = start(settings.clone()).await;
    let coupon = app.create_stock(20).await;
    let mut first = Vec::new();
    for user in 1..=4 {
        first.push(
            app.apply_through_outage(coupon, user, Duration::from_secs(10))
                .await,
        );
    }
    assert_eq!(app.issuer().run_once().await.unwrap().published, 4);
    for user in 5..=10 {
        let instance = if user % 2 == 0 { &app } else { &other };
        first.push(
            instance
                .apply_through_outage(coupon, user, Duration::from_secs(10))
                .await,
        );
    }

    // Act: Redis comes back empty (a restart without persistence); newcomers arrive.
    proxy.retarget(format!("127.0.0.1:{}", empty.port));
    let ticks = crate::helpers::ticker(app.issuer());
    let mut newcomers = Vec::new();
    for user in 11..=15 {
        newcomers.push(
            other
                .apply_through_outage(coupon, user, Duration::from_secs(60))
                .await,
        );
    }

    // Assert: the six unpublished winners keep their places and are issued; newcomers follow.
    let mut everyone = told(&first);
    everyone.extend(told(&newcomers));
    let expected: BTreeMap<i64, i32> = (1..=15).map(|u| (u, u as i32)).collect();
    assert_eq!(everyone, expected, "positions told");
    let rows = eventually("fifteen rows", Duration::from_secs(60), || async {
        let rows = app.issued_rows(coupon).await;
        (rows.len() >= 15).then_some(rows)
    })
    .await;
    assert_eq!(
        rows.into_iter().collect::<BTreeMap<_, _>>(),
        expected,
        "rows"
    );
    assert_eq!(app.failed_events().await, 0);
    app.assert_counted(coupon).await;
    ticks.abort();
}

#[tokio::test]
async fn a_winner_whose_place_an_earlier_arrival_kept_after_a_failover_hears_lost_at_that_place() {
    // Arrange: stock 3, APP_REDIS__ACK_REPLICAS=0, master M with replica M2 behind a proxy.
    // Users 1 and 2 are persisted; then M2 stops following M.
    let m = PrivateRedis::start().await;
    let m2 = PrivateRedis::start_with(&["--replicaof", "127.0.0.1", &m.port.to_string()]).await;
    let (proxy, settings) = behind_a_proxy_to(&m).await;
    let app = start(settings.clone()).await;
    let coupon = app.create_stock(3).await;
    let keys = app.keys(coupon);
    for user in 1..=2 {
        app.apply_through_outage(coupon, user, Duration::from_secs(10))
            .await;
    }
    assert_eq!(app.issuer().run_once().await.unwrap().published, 2);
    eventually("two rows", Duration::from_secs(30), || async {
        (app.issued_rows(coupon).await.len() == 2).then_some(())
    })
    .await;
    let queue = &keys.queue;
    eventually("M2 holds both", Duration::from_secs(10), || async {
        let n: i64 = redis::cmd("ZCARD")
            .arg(queue)
            .query_async(&mut m2.connection().await)
            .await
            .unwrap();
        (n == 2).then_some(())
    })
    .await;
    stop_following(&m2).await;
    // User 3 is told place 3 by the service (on M); user 4 is told place 3 too, later, by M2,
    // which never saw user 3 (a bare gate straight to it: the one place two users are told the
    // same place is a loss with APP_REDIS__ACK_REPLICAS=0).
    let three = app
        .apply_through_outage(coupon, 3, Duration::from_secs(10))
        .await;
    assert_eq!(told(&[three]), BTreeMap::from([(3, 3)]));
    let mut on_m2 = settings.clone();
    on_m2.redis.url = format!("redis://127.0.0.1:{}", m2.port).into();
    let id = fcfs_coupon::domain::CouponId::new(coupon).unwrap();
    let four = (on_m2.redis.gate().unwrap())
        .apply(id, fcfs_coupon::domain::UserId::new(4).unwrap())
        .await
        .unwrap();
    let fcfs_coupon::gate::Admission::Admitted { ticket, .. } = four else {
        panic!("user 4: {four:?}")
    };
    assert_eq!(ticket.position.get(), 3);

    // Act: "Redis" fails over to M2; the issuer ticks once the changed server is held.
    proxy.retarget(format!("127.0.0.1:{}", m2.port));
    eventually("held", Duration::from_secs(10), || async {
        held_on(&m2, &keys.meta).await.then_some(())
    })
    .await;
    let ticks = crate::helpers::ticker(app.issuer());

    // Assert: the earlier arrival keeps place 3 and its coupon; user 4 hears LOST, at the place
    // it was told, with a reason, and nothing to wait for.
    let lost: serde_json::Value = eventually("user 4 LOST", Duration::from_secs(60), || async {
        let resp = app.position(coupon, 4).await;
        if resp.status() != StatusCode::OK {
            return None;
        }
        let body: serde_json::Value = resp.json().await.unwrap();
        (body["status"] == "LOST").then_some(body)
    })
    .await;
    assert_eq!(lost["position"], 3, "{lost}");
    assert!(lost["reason"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(lost.get("retryAfterMs").is_none(), "{lost}");
    let rows = eventually("three rows", Duration::from_secs(60), || async {
        let rows = app.issued_rows(coupon).await;
        (rows.len() >= 3).then_some(rows)
    })
    .await;
    assert_eq!(rows, [(1, 1), (2, 2), (3, 3)]);
    assert_eq!(app.position_status(coupon, 3).await, "ISSUED");
    assert_eq!(app.failed_events().await, 0);
    app.assert_counted(coupon).await;
    ticks.abort();
}
