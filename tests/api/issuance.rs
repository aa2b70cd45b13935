//! The pipeline after the gate: issuer → Kafka → consumer → PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fcfs_coupon::domain::Status;
use fcfs_coupon::domain::{CouponId, UserId};
use fcfs_coupon::gate::Admission;
use fcfs_coupon::store::LIST_COUPONS_SQL;
use futures::{stream, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    committed_total, eventually, isolated_settings, postgres_address, produce_raw, spawn_app,
    spawn_app_with, start, through_proxy, topic_messages, without_tls, TcpProxy, TestApp, MANUAL,
};

/// Every user applies once, `workers` at a time; returns user → position told at apply time.
pub async fn crowd(
    apps: &[&TestApp],
    coupon: i64,
    users: impl Iterator<Item = i64>,
) -> BTreeMap<i64, i64> {
    let answers: Vec<(i64, StatusCode, Value)> = stream::iter(users.enumerate())
        .map(|(i, user)| {
            let app = apps[i % apps.len()];
            async move {
                let resp = app.apply(coupon, user).await;
                let status = resp.status();
                (user, status, resp.json::<Value>().await.unwrap())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    answers
        .into_iter()
        .filter(|(_, status, _)| *status == StatusCode::ACCEPTED)
        .map(|(user, _, body)| (user, body["position"].as_i64().unwrap()))
        .collect()
}

/// Exactly `stock` rows, distinct users, positions 1..=stock, each the one its user was told.
pub async fn assert_issued_exactly(
    app: &TestApp,
    coupon: i64,
    told: &BTreeMap<i64, i64>,
    stock: i32,
) {
    let rows = app.issued_rows(coupon).await;
    assert_eq!(rows.len(), stock as usize);
    assert_eq!(
        rows.iter().map(|(_, p)| *p).collect::<Vec<_>>(),
        (1..=stock).collect::<Vec<_>>()
    );
    let users: BTreeSet<i64> = rows.iter().map(|(u, _)| *u).collect();
    assert_eq!(users.len(), stock as usize, "no user twice");
    for (user, position) in &rows {
        assert_eq!(
            told[user],
            i64::from(*position),
            "user {user} was told another position"
        );
    }
    assert_eq!(app.issued_count(coupon).await, stock);
}

#[tokio::test]
async fn every_winner_of_the_race_is_persisted_in_arrival_order() {
    let app = spawn_app().await;
    let coupon = app.create_stock(100).await;

    let told = crowd(&[&app], coupon, 1..=1_000).await;
    assert_eq!(told.len(), 100);
    app.wait_for_rows(coupon, 100).await;

    assert_issued_exactly(&app, coupon, &told, 100).await;
    assert_eq!(app.db_state().await.2, 0, "no failed events");
    for user in told.keys() {
        let status = eventually("ISSUED", Duration::from_secs(10), || async {
            let s = app.position_status(coupon, *user).await;
            (s == "ISSUED").then_some(s)
        });
        status.await;
    }
    let loser = (1..=1_000).find(|u| !told.contains_key(u)).unwrap();
    assert_eq!(app.position_status(coupon, loser).await, "SOLD_OUT");
    let view = app.coupon_json(coupon).await;
    assert_eq!(
        (view["admitted"].clone(), view["issued"].clone()),
        (json!(100), json!(100))
    );
}

#[tokio::test]
async fn three_instances_issue_exactly_the_stock() {
    let settings = isolated_settings();
    let a = start(settings.clone()).await;
    let b = start(settings.clone()).await;
    let c = start(settings).await;
    let coupon = a.create_stock(100).await;

    let told = crowd(&[&a, &b, &c], coupon, 1..=1_000).await;
    assert_eq!(told.len(), 100);
    a.wait_for_rows(coupon, 100).await;

    assert_issued_exactly(&a, coupon, &told, 100).await;
}

#[tokio::test]
async fn winners_claimed_by_an_issuer_that_died_are_issued_once_after_the_lease() {
    let app = spawn_app_with(|s| s.issuer.schedule = MANUAL.into()).await;
    let coupon = app.create_stock(10).await;
    let told = crowd(&[&app], coupon, 1..=10).await;

    // An issuer claims every winner and dies before sending anything.
    let id = CouponId::new(coupon).unwrap();
    let claim = app
        .gate
        .claim(id, 100, Duration::from_millis(1_500))
        .await
        .unwrap();
    assert_eq!(claim.winners.len(), 10);
    assert_eq!(
        app.issuer().run_once().await.unwrap().published,
        0,
        "the lease still holds"
    );

    // Once the lease runs out, a live issuer takes the winners over.
    eventually("the lease to expire", Duration::from_secs(10), || async {
        (app.issuer().run_once().await.unwrap().published == 10).then_some(())
    })
    .await;
    app.wait_for_rows(coupon, 10).await;
    assert_issued_exactly(&app, coupon, &told, 10).await;
}

#[tokio::test]
async fn redelivered_messages_add_nothing() {
    let app = spawn_app().await;
    let coupon = app.create_stock(50).await;
    let told = crowd(&[&app], coupon, 1..=50).await;
    app.wait_for_rows(coupon, 50).await;

    // A second group replays the topic from the beginning into the same database.
    let mut replay = app.settings.clone();
    replay.kafka.group_id = format!("{}-replay", replay.kafka.group_id);
    let replayer = start(replay.clone()).await;
    eventually("the replay to finish", Duration::from_secs(60), || async {
        (committed_total(&replay, &replay.kafka.group_id).await == 50).then_some(())
    })
    .await;

    assert_issued_exactly(&app, coupon, &told, 50).await;
    assert_eq!(
        app.db_state().await.2,
        0,
        "a redelivery is not a failed event"
    );
    drop(replayer);
}

#[tokio::test]
async fn the_consumer_waits_out_a_database_outage_and_commits_nothing_meanwhile() {
    let proxy = TcpProxy::start(postgres_address()).await;
    let app = spawn_app_with(|s| {
        through_proxy(s, proxy.port);
    })
    .await;
    let coupon = app.create_stock(60).await;
    let mut told = crowd(&[&app], coupon, 1..=30).await;
    app.wait_for_rows(coupon, 30).await;
    let group = app.settings.kafka.group_id.clone();
    eventually(
        "offsets of the first 30",
        Duration::from_secs(10),
        || async { (committed_total(&app.settings, &group).await == 30).then_some(()) },
    )
    .await;

    proxy.cut();
    told.extend(crowd(&[&app], coupon, 31..=60).await);
    eventually(
        "the rest to be published",
        Duration::from_secs(20),
        || async {
            let statuses = stream::iter(31..=60)
                .then(|u| app.position_status(coupon, u))
                .collect::<Vec<_>>()
                .await;
            statuses.iter().all(|s| s == "PUBLISHED").then_some(())
        },
    )
    .await;
    // The consumer has the messages but cannot commit their rows: it must not commit offsets.
    // Watched for longer than librdkafka's auto-commit interval (5 s), so a consumer that left
    // committing to librdkafka would be caught.
    let watched = std::time::Instant::now();
    while watched.elapsed() < Duration::from_secs(6) {
        assert_eq!(committed_total(&app.settings, &group).await, 30);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    proxy.restore();
    app.wait_for_rows(coupon, 60).await;
    assert_issued_exactly(&app, coupon, &told, 60).await;
}

#[tokio::test]
async fn poison_messages_are_set_aside_and_the_rest_lands() {
    let app = spawn_app().await;
    let coupon = app.create_stock(20).await;
    produce_raw(&app.settings, "1", b"not json at all").await;
    let unknown = json!({"v": 1, "couponId": 987654, "userId": 5, "position": 1,
        "appliedAt": "2026-01-01T00:00:00Z", "publishedAt": "2026-01-01T00:00:01Z"});
    produce_raw(&app.settings, "987654", unknown.to_string().as_bytes()).await;

    let told = crowd(&[&app], coupon, 1..=20).await;
    app.wait_for_rows(coupon, 20).await;
    assert_issued_exactly(&app, coupon, &told, 20).await;

    let dlq = app.settings.kafka.dead_letter_topic();
    eventually("two dead letters", Duration::from_secs(20), || async {
        (topic_messages(&app.settings, &dlq).await == 2).then_some(())
    })
    .await;
    let failed: Vec<(String,)> = sqlx::query_as("SELECT error FROM failed_event ORDER BY id")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(failed.len(), 2, "{failed:?}");
}

#[tokio::test]
async fn a_poison_message_with_nul_bytes_is_recorded_and_the_consumer_moves_on() {
    // PostgreSQL's text type refuses NUL: recorded as it came, the failed_event insert would be
    // retried forever and nothing after it would be persisted.
    let app = spawn_app().await;
    let coupon = app.create_stock(5).await;
    produce_raw(&app.settings, "9\u{0}9", b"\0{\"v\":1}\0").await;
    eventually("the poison recorded", Duration::from_secs(20), || async {
        (app.failed_events().await == 1).then_some(())
    })
    .await;

    let told = crowd(&[&app], coupon, 1..=5).await;
    app.wait_for_rows(coupon, 5).await;
    assert_issued_exactly(&app, coupon, &told, 5).await;
    let (key, payload): (String, Vec<u8>) = sqlx::query_as("SELECT key, payload FROM failed_event")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(key, "9\\09", "NUL written visibly");
    assert_eq!(payload, b"\0{\"v\":1}\0", "the payload kept byte for byte");
}

#[tokio::test]
async fn a_late_published_acknowledgement_never_turns_issued_back() {
    let app = spawn_app().await;
    let coupon = app.create_stock(5).await;
    assert_eq!(app.apply(coupon, 3).await.status(), StatusCode::ACCEPTED);
    app.wait_for_rows(coupon, 1).await;
    eventually("ISSUED", Duration::from_secs(10), || async {
        (app.position_status(coupon, 3).await == "ISSUED").then_some(())
    })
    .await;

    let (id, user) = (CouponId::new(coupon).unwrap(), UserId::new(3).unwrap());
    let changed = app
        .gate
        .advance(id, Status::Published, &[user])
        .await
        .unwrap();

    assert_eq!(changed, 0);
    assert_eq!(app.position_status(coupon, 3).await, "ISSUED");
    assert_eq!(app.coupon_json(coupon).await["issued"], 1);
}

#[tokio::test]
async fn issued_coupons_are_listed_for_their_owner_and_the_admin() {
    let app = spawn_app().await;
    let coupon = app.create_stock(3).await;
    crowd(&[&app], coupon, [10, 11, 12].into_iter()).await;
    app.wait_for_rows(coupon, 3).await;

    let mine = app.get_json_as("/me/coupons", 11).await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
    assert_eq!(mine["items"][0]["couponId"], coupon);

    let page = |after: i64| {
        let app = &app;
        async move {
            let resp = app
                .client
                .get(app.url(&format!(
                    "/coupons/{coupon}/issues?afterPosition={after}&limit=2"
                )))
                .bearer_auth(app.admin_token())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            resp.json::<Value>().await.unwrap()
        }
    };
    let first = page(0).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert_eq!(first["nextAfterPosition"], 2);
    let second = page(2).await;
    assert_eq!(second["items"][0]["position"], 3);
    assert_eq!(second["nextAfterPosition"], Value::Null);
}

#[tokio::test]
async fn a_producer_that_failed_for_good_stops_the_process_and_loses_no_winner() {
    // Arrange: librdkafka declares the producer dead (as after a lost idempotence sequence).
    let app = spawn_app().await;
    let coupon = app.create_stock(5).await;
    app.issuer().publisher().raise_fatal_error_for_tests();

    // Act: a winner is admitted; the issuer's next tick meets the dead producer.
    assert_eq!(app.apply(coupon, 1).await.status(), StatusCode::ACCEPTED);

    // Assert: the service stops itself (an orchestrator restarts it) without claiming the
    // winner, and a new instance on the same settings issues it.
    let port = app.address.rsplit(':').next().unwrap().to_owned();
    eventually("the service to stop", Duration::from_secs(15), || async {
        tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert_eq!(app.queue(coupon).await.len(), 1);
    assert!(app.issued_rows(coupon).await.is_empty());
    let settings = app.settings.clone();
    let _kept = app.stop().await;
    let again = start(settings).await;
    again.wait_for_rows(coupon, 1).await;
}

/// Admits `winners` of `coupon` straight through the gate, runs one issuer tick and waits until
/// every row is in; returns user → position told.
async fn drain(app: &TestApp, coupon: i64, winners: u32) -> BTreeMap<i64, i64> {
    let id = CouponId::new(coupon).unwrap();
    let told = stream::iter(1..=i64::from(winners))
        .map(|user| async move {
            match app
                .gate
                .apply(id, UserId::new(user).unwrap())
                .await
                .unwrap()
            {
                Admission::Admitted { ticket, .. } => (user, i64::from(ticket.position.get())),
                other => panic!("user {user} was not admitted: {other:?}"),
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert_eq!(
        app.issuer().run_once().await.unwrap().published,
        winners as usize
    );
    eventually("every row persisted", Duration::from_secs(120), || async {
        (app.issued_count(coupon).await == winners as i32).then_some(())
    })
    .await;
    told
}

/// The list of events is served from a copy refreshed at most once a second
/// (`api::fresh::Fresh`), so 64 clients polling it as fast as they can put about one query a
/// second on PostgreSQL, and a spike drains beside them. Judged by the statements counted on
/// the wire against the time the flood took, never by comparing durations: a slow machine
/// cannot turn it red, a list read from PostgreSQL every time (no copy) cannot pass.
#[tokio::test]
async fn a_flood_of_public_list_reads_reaches_the_database_once_a_second() {
    // Arrange: the service reaches PostgreSQL through a proxy that counts the statements it
    // executes (in plaintext, so that the proxy can read them). The spike's event is created
    // first: creating an event forgets the copy.
    const WINNERS: u32 = 3000;
    const READS: u32 = 2000;
    let (db, statements) = TcpProxy::start_postgres(postgres_address()).await;
    let app = spawn_app_with(|s| {
        s.issuer.schedule = MANUAL.into();
        through_proxy(s, db.port);
        without_tls(s);
    })
    .await;
    let coupon = app.create_stock(WINNERS).await;
    let before = statements.executions(LIST_COUPONS_SQL);

    // Act: 64 clients read `GET /coupons` until READS reads were served and, meanwhile, the
    // spike drained (its winners admitted straight through the gate, one issuer tick).
    let started = Instant::now();
    let served = Arc::new(AtomicU32::new(0));
    let stop = CancellationToken::new();
    let flood: Vec<_> = (0..64)
        .map(|_| {
            let (client, url) = (app.client.clone(), app.url("/coupons"));
            let (served, stop) = (served.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let resp = client.get(&url).send().await.unwrap();
                    assert_eq!(resp.status(), StatusCode::OK);
                    served.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let told = drain(&app, coupon, WINNERS).await;
    // A hang guard only: a client that failed ends the wait too, and shows its panic below.
    eventually("the flood's reads", Duration::from_secs(120), || async {
        let done = served.load(Ordering::Relaxed) >= READS;
        (done || flood.iter().any(|c| c.is_finished())).then_some(())
    })
    .await;
    stop.cancel();
    for client in flood {
        client.await.unwrap();
    }
    let elapsed = started.elapsed();
    let queries = statements.executions(LIST_COUPONS_SQL) - before;

    // Assert: every winner persisted; the proxy read every connection and saw the list's
    // statement; over a flood of T seconds it reached PostgreSQL at most ⌈T⌉ + 2 times (a copy
    // refreshed at most once a second allows ⌊T⌋ + 1). A slow machine only makes T, and the
    // allowance, larger.
    assert_issued_exactly(&app, coupon, &told, WINNERS as i32).await;
    let served = served.load(Ordering::Relaxed);
    eprintln!("FIGURE flood: {served} list reads in {elapsed:.2?}, {queries} list queries");
    assert_eq!(
        statements.unreadable(),
        0,
        "the proxy could not read a connection"
    );
    assert!(
        queries >= 1,
        "the proxy never saw the list's statement: is it still store::LIST_COUPONS_SQL?"
    );
    let bound = elapsed.as_secs() + u64::from(elapsed.subsec_nanos() > 0) + 2;
    assert!(
        queries <= bound,
        "{queries} list queries reached PostgreSQL for {served} reads in {elapsed:.2?}: \
         a copy refreshed at most once a second allows {bound}"
    );
}

#[tokio::test]
async fn a_claim_older_than_the_claim_window_is_not_sent_and_its_lease_hands_it_back() {
    // Arrange: three winners pending; an issuer that reaches Redis through a proxy adding
    // 100 ms each way, with a claim window of 50 ms (in production: the Redis timeout plus two
    // replica waits, the bound a restore's settle counts on).
    let app = spawn_app_with(|s| {
        s.issuer.schedule = MANUAL.into();
        s.issuer.lease_ms = 2_000;
    })
    .await;
    let coupon = app.create_stock(5).await;
    let statuses = app.apply_all(coupon, 1..=3, 3).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::ACCEPTED));
    let proxy = TcpProxy::start(crate::helpers::redis_address()).await;
    let mut slow = app.settings.clone();
    slow.redis.url = format!("redis://{}", proxy.address()).into();
    let gate = slow.redis.gate().unwrap();
    // Connected before the link slows: only the claim's own round trip is slow.
    gate.ping().await.unwrap();
    proxy.slow(Duration::from_millis(100));
    let issuer = fcfs_coupon::issuer::Issuer::new(
        gate,
        fcfs_coupon::kafka::Publisher::new(&slow.kafka, Duration::from_secs(2)).unwrap(),
        slow.issuer.clone(),
        Duration::from_millis(50),
        fcfs_coupon::metrics::Metrics::new(),
    );

    // Act: a tick whose claim takes longer than the window.
    let report = issuer.run_once().await.unwrap();

    // Assert: nothing was sent, and nobody is PUBLISHED; once the lease runs out, a prompt
    // issuer sends all three, once each.
    assert_eq!(report.published, 0);
    assert_eq!(
        topic_messages(&app.settings, &app.settings.kafka.topic).await,
        0
    );
    let statuses = app.statuses(coupon).await;
    assert!(statuses.values().all(|s| s == "ADMITTED"), "{statuses:?}");
    let published = eventually(
        "the lease handed them back",
        Duration::from_secs(10),
        || async {
            let n = app.issuer().run_once().await.unwrap().published;
            (n > 0).then_some(n)
        },
    )
    .await;
    assert_eq!(published, 3);
    let rows = eventually("three rows", Duration::from_secs(30), || async {
        let rows = app.issued_rows(coupon).await;
        (rows.len() >= 3).then_some(rows)
    })
    .await;
    let positions: Vec<i32> = rows.iter().map(|(_, p)| *p).collect();
    assert_eq!(positions, [1, 2, 3]);
    assert_eq!(
        topic_messages(&app.settings, &app.settings.kafka.topic).await,
        3
    );
}
