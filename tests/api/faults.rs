//! Processes and dependencies failing in the middle of issuance. Each test ends with
//! `assert_settled` (rows == admitted winners in order, positions 1..=n, issued_count == rows
//! <= stock, every winner ISSUED, nothing in failed_event or on the dead-letter topic, a clean
//! audit), and where the test holds every answer, with the positions the clients were told.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures::{stream, StreamExt};
use reqwest::StatusCode;
use secrecy::ExposeSecret;

use crate::helpers::{
    assert_settled, assert_settled_as_told, committed_total, eventually, isolated_settings,
    observe, spawn_app_with, start, DurableBroker, ServiceProcess, TcpProxy, TestApp,
};

/// One client's answer: the status (`None` when the connection was refused or died) and the
/// position it was told when admitted.
type Answer = (i64, Option<StatusCode>, Option<i32>);

/// Every user applies once, `concurrency` at a time, like `apply_all`, but a refused
/// connection (the service is down) is an answer too, and the position told is kept.
async fn spike(
    app: &TestApp,
    coupon: i64,
    users: impl IntoIterator<Item = i64>,
    concurrency: usize,
) -> Vec<Answer> {
    stream::iter(users)
        .map(|user| async move {
            let sent = app
                .client
                .post(app.url(&format!("/coupons/{coupon}/issue")))
                .bearer_auth(app.user_token(user))
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            let Ok(resp) = sent else {
                return (user, None, None);
            };
            let status = resp.status();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            let position = body["position"].as_i64().map(|p| p as i32);
            (user, Some(status), position)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// The users told they were admitted (202, or 200 on a repeat), with the position told.
fn told(answers: &[Answer]) -> BTreeMap<i64, i32> {
    answers
        .iter()
        .filter(|(_, s, _)| matches!(*s, Some(StatusCode::ACCEPTED | StatusCode::OK)))
        .map(|(u, _, p)| (*u, p.expect("an admission carries its position")))
        .collect()
}

fn winners(answers: &[Answer]) -> HashSet<i64> {
    told(answers).into_keys().collect()
}

#[tokio::test]
async fn a_service_killed_mid_spike_loses_and_doubles_no_winner() {
    // Arrange: the whole service in a child process; short leases so the restarted instance
    // takes over the dead one's claims quickly.
    let mut settings = isolated_settings();
    settings.issuer.lease_ms = fcfs_coupon::configuration::IssuerSettings::MIN_LEASE_MS;
    let first = ServiceProcess::spawn(&settings, &[]).await;
    let app = observe(settings.clone(), first.address.clone()).await;
    let coupon = app.create_stock(100).await;

    // Act: 300 users rush; SIGKILL once 40 are in.
    let (before, ()) = tokio::join!(spike(&app, coupon, 1..=300, 16), async {
        eventually("40 admitted", Duration::from_secs(30), || async {
            (app.queue(coupon).await.len() >= 40).then_some(())
        })
        .await;
        first.kill().await;
    });
    let unanswered: Vec<i64> = before
        .iter()
        .filter(|(_, s, _)| s.is_none())
        .map(|(u, _, _)| *u)
        .collect();
    assert!(!unanswered.is_empty(), "the kill landed mid-spike");
    let second = ServiceProcess::spawn(&settings, &[]).await;
    let app = observe(settings, second.address.clone()).await;
    // Clients whose request died with the process try again.
    let after = spike(&app, coupon, unanswered, 16).await;
    assert!(after.iter().all(|(_, s, _)| s.is_some()));

    // Assert: exactly the stock; every winner told "admitted", before the kill or after it,
    // persisted at the position it was told, and nobody else.
    let mut all_told = told(&before);
    all_told.extend(told(&after));
    let rows = assert_settled_as_told(&app, coupon, 100, &all_told).await;
    assert_eq!(rows.len(), 100);
}

/// Settings for consumers slow enough (100 rows/s, batches of 50) that each always holds a
/// batch it has not committed, on `broker`.
///
/// The broker is a `sqlite://` one: Tansu's `memory://` storage fetches whole stored batches
/// from the first one that *starts* at or after the requested offset, so a consumer resuming
/// from a commit in the middle of a producer batch never gets the rest of it.
fn slow_consumers(broker: &DurableBroker) -> fcfs_coupon::configuration::Settings {
    let mut settings = isolated_settings();
    settings.kafka.brokers = broker.address();
    settings.consumer.batch_size = 50;
    settings.consumer.max_rows_per_sec = Some(100);
    // A member that dies without leaving is dropped from the group this long after its last
    // heartbeat.
    settings.consumer.session_timeout_ms = 6_000;
    settings.consumer.max_poll_interval_ms = 15_000;
    settings
}

/// A coupon of 300 that 300 users rushed, every one of them admitted.
async fn sold_out(app: &TestApp) -> i64 {
    let coupon = app.create_stock(300).await;
    let answers = spike(app, coupon, 1..=300, 32).await;
    assert_eq!(winners(&answers).len(), 300);
    coupon
}

/// Waits until every winner of `sold_out`'s coupon is on the topic and some rows are in,
/// SIGKILLs `victim`, and checks it died holding messages the group had not committed: the
/// topic holds at least one per winner, so commits short of 300 leave some behind.
async fn kill_mid_batch(app: &TestApp, coupon: i64, victim: ServiceProcess) {
    let id = fcfs_coupon::domain::CouponId::new(coupon).unwrap();
    eventually(
        "every winner published",
        Duration::from_secs(60),
        || async {
            let state = app.gate.inspect(id).await.unwrap();
            (state.pending.is_empty() && state.inflight.is_empty()).then_some(())
        },
    )
    .await;
    eventually("some rows persisted", Duration::from_secs(60), || async {
        (app.issued_rows(coupon).await.len() >= 60).then_some(())
    })
    .await;
    victim.kill().await;
    let committed = committed_total(&app.settings, &app.settings.kafka.group_id).await;
    assert!(
        committed < 300,
        "the killed consumer held uncommitted messages"
    );
}

/// After a consumer died: the group committed past every message on the topic (whatever was
/// redelivered has been consumed), and the 300 winners are persisted once each.
async fn assert_redelivered_once(app: &TestApp, coupon: i64) {
    let kafka = &app.settings.kafka;
    eventually(
        "every message committed",
        Duration::from_secs(120),
        || async {
            let offsets = fcfs_coupon::kafka::group_offsets(kafka, &kafka.topic, &kafka.group_id)
                .await
                .ok()?;
            (offsets.behind() == 0).then_some(())
        },
    )
    .await;
    let rows = assert_settled(app, coupon, 300).await;
    assert_eq!(rows.len(), 300);
}

/// The partitions a consumer process last logged as assigned to it.
async fn assigned(consumer: &ServiceProcess) -> Option<Vec<i32>> {
    let log = tokio::fs::read_to_string(&consumer.log).await.ok()?;
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("partitions assigned"))?;
    let list = line.split("partitions=[").nth(1)?.split(']').next()?;
    Some(
        list.split(',')
            .filter_map(|p| p.trim().parse().ok())
            .collect(),
    )
}

#[tokio::test]
async fn a_consumer_killed_mid_batch_is_redelivered_without_duplicates() {
    // Arrange: two consumers share the partitions, slower still so the pair is mid-way when
    // one dies.
    let broker = DurableBroker::start().await;
    let mut settings = slow_consumers(&broker);
    settings.consumer.max_rows_per_sec = Some(50);
    let partitions: Vec<i32> = (0..settings.kafka.partitions).collect();
    let api = ServiceProcess::spawn(&settings, &["api", "issuer"]).await;
    let victim = ServiceProcess::spawn(&settings, &["consumer"]).await;
    let survivor = ServiceProcess::spawn(&settings, &["consumer"]).await;
    eventually(
        "the two share the partitions",
        Duration::from_secs(60),
        || async {
            let (mut a, b) = (assigned(&victim).await?, assigned(&survivor).await?);
            a.extend(b);
            a.sort();
            (a == partitions).then_some(())
        },
    )
    .await;
    let app = observe(settings.clone(), api.address.clone()).await;
    let coupon = sold_out(&app).await;

    // Act: one dies holding a batch and never comes back.
    kill_mid_batch(&app, coupon, victim).await;

    // Assert: once the broker drops the dead member, the survivor owns every partition and
    // consumes what the dead one had not committed; nothing is doubled.
    eventually(
        "the survivor owns every partition",
        Duration::from_secs(60),
        || async { (assigned(&survivor).await? == partitions).then_some(()) },
    )
    .await;
    assert_redelivered_once(&app, coupon).await;
    drop(api);
}

#[tokio::test]
async fn a_lone_consumer_killed_mid_batch_resumes_after_a_restart() {
    // Arrange
    let broker = DurableBroker::start().await;
    let settings = slow_consumers(&broker);
    let api = ServiceProcess::spawn(&settings, &["api", "issuer"]).await;
    let consumer = ServiceProcess::spawn(&settings, &["consumer"]).await;
    let app = observe(settings.clone(), api.address.clone()).await;
    let coupon = sold_out(&app).await;

    // Act: it dies holding a batch; a new process joins the group in its place.
    kill_mid_batch(&app, coupon, consumer).await;
    let _consumer = ServiceProcess::spawn(&settings, &["consumer"]).await;

    // Assert: the new process consumed what the dead one had not committed, adding nothing twice.
    assert_redelivered_once(&app, coupon).await;
    drop(api);
}

#[tokio::test]
async fn the_database_down_for_ten_seconds_delays_issuance_and_loses_nothing() {
    // Arrange: the service reaches PostgreSQL through a proxy the test can cut.
    let proxy = TcpProxy::start("127.0.0.1:5432").await;
    let app = spawn_app_with(|s| {
        let url = s
            .database
            .url
            .expose_secret()
            .replace(":5432/", &format!(":{}/", proxy.port));
        s.database.url = url.into();
    })
    .await;
    let coupon = app.create_stock(100).await;

    // Act: the database goes away; a crowd applies; ten seconds later it is back.
    proxy.cut();
    let outage = std::time::Instant::now();
    let answers = spike(&app, coupon, 1..=150, 16).await;
    let statuses: Vec<StatusCode> = answers.iter().map(|(_, s, _)| s.unwrap()).collect();
    let position = app.position(coupon, 1).await.status();
    // Evidence that the outage path ran: every winner reached Kafka and none was persisted
    // (ISSUED follows the rows' commit), and the consumer met PostgreSQL failing. (The test's
    // own pool goes through the proxy too, so it reads Redis and /metrics here.)
    eventually("every winner PUBLISHED", Duration::from_secs(9), || async {
        let statuses = app.statuses(coupon).await;
        (statuses.len() == 100 && statuses.values().all(|s| s == "PUBLISHED")).then_some(())
    })
    .await;
    eventually(
        "postgres errors counted",
        Duration::from_secs(9),
        || async {
            let errors = app
                .metric(r#"fcfs_dependency_errors_total{dependency="postgres"}"#)
                .await;
            (errors > 0.0).then_some(())
        },
    )
    .await;
    // The outage itself, not a wait for a condition.
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(outage.elapsed())).await;
    proxy.restore();

    // Assert: applies were answered from Redis alone, then everything landed.
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::ACCEPTED)
            .count(),
        100
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::GONE).count(),
        50
    );
    assert_eq!(position, StatusCode::OK);
    let rows = assert_settled_as_told(&app, coupon, 100, &told(&answers)).await;
    assert_eq!(rows.len(), 100);
}

#[tokio::test]
async fn a_broker_restart_mid_issuance_loses_and_doubles_nothing() {
    // Arrange: a broker of this test's own, durable (sqlite), the service on it.
    let mut broker = DurableBroker::start().await;
    let mut settings = isolated_settings();
    settings.kafka.brokers = broker.address();
    // Small batches at 50 rows/s (the bucket holds one second's worth): issuance takes seconds.
    settings.consumer.batch_size = 20;
    settings.consumer.max_rows_per_sec = Some(50);
    let app = start(settings).await;
    let coupon = sold_out(&app).await;

    // Act: kill and restart the broker while winners are still moving through it.
    eventually("issuance under way", Duration::from_secs(60), || async {
        (!app.issued_rows(coupon).await.is_empty()).then_some(())
    })
    .await;
    let persisted_before = app.issued_rows(coupon).await.len();
    broker.restart().await;

    // Assert
    assert!(persisted_before < 300, "the restart landed mid-issuance");
    let rows = assert_settled(&app, coupon, 300).await;
    assert_eq!(rows.len(), 300);
}
