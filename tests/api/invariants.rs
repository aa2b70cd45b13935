//! The books, live (`ops::reconcile::books`): each equality broken on purpose is reported in
//! `fcfs_invariant_violations{coupon,kind}` within seconds, and cleared once repaired; a
//! pipeline in motion, or stopped with its work safely on Kafka, is never reported.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use fcfs_coupon::domain::CouponId;
use fcfs_coupon::startup::Role;
use reqwest::StatusCode;

use serde_json::json;

use crate::helpers::{
    artifact, browser_script, eventually, isolated_settings, spawn_app, start, start_roles, TestApp,
};

/// Settle (5 s) plus a census (at most 2 s apart) plus looks and slack.
const WITHIN: Duration = Duration::from_secs(30);

/// Every `fcfs_invariant_violations` series of `coupon` on the ops port: kind → value.
async fn violations(app: &TestApp, coupon: i64) -> BTreeMap<String, f64> {
    let text = app.ops_get("/metrics").await.text().await.unwrap();
    let prefix = format!("fcfs_invariant_violations{{coupon=\"{coupon}\",kind=\"");
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (kind, value) = rest.split_once("\"} ")?;
            Some((kind.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The kinds reported off (above 0) for `coupon`.
async fn off(app: &TestApp, coupon: i64) -> BTreeMap<String, f64> {
    let mut all = violations(app, coupon).await;
    all.retain(|_, v| *v > 0.0);
    all
}

/// The kinds the live dashboard's stats carry for `coupon`.
async fn stats_kinds(app: &TestApp, coupon: i64) -> Vec<String> {
    let stats: serde_json::Value = app
        .get(&format!("/coupons/{coupon}/stats"))
        .await
        .json()
        .await
        .unwrap();
    stats["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until exactly `expected` (kinds with a value above 0) is reported for `coupon`.
async fn until_reported(app: &TestApp, coupon: i64, expected: &[(&str, f64)]) {
    let expected: BTreeMap<String, f64> = expected
        .iter()
        .map(|(k, v)| ((*k).to_owned(), *v))
        .collect();
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let off = off(app, coupon).await;
        if off == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {WITHIN:?} for violations {expected:?}; reported: {off:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The watcher's last completed check, as a Unix time.
async fn last_check(app: &TestApp) -> f64 {
    app.metric("fcfs_invariant_last_check_timestamp_seconds")
        .await
}

/// A drop of `stock` among `users`, fully issued and logged.
async fn issued_drop(app: &TestApp, stock: u32, users: i64) -> i64 {
    let coupon = app.create_stock(stock).await;
    app.apply_all(coupon, 1..=users, 8).await;
    app.wait_for_rows(coupon, stock as usize).await;
    eventually("the fairness log complete", WITHIN, || async {
        let size: Option<i64> =
            sqlx::query_scalar("SELECT size FROM fairness_log WHERE coupon_id = $1")
                .bind(coupon)
                .fetch_optional(&app.db)
                .await
                .unwrap();
        (size == Some(i64::from(stock))).then_some(())
    })
    .await;
    coupon
}

#[tokio::test]
async fn a_drop_and_a_consumer_stopped_for_a_while_are_never_reported() {
    // The API and the issuer only: every winner is published and waits on Kafka.
    let settings = isolated_settings();
    let app = start_roles(settings.clone(), &[Role::Api, Role::Issuer]).await;
    let coupon = app.create_stock(10).await;
    app.apply_all(coupon, 1..=30, 8).await;
    eventually("every winner published", WITHIN, || async {
        let statuses = app.statuses(coupon).await;
        (statuses.len() == 10 && statuses.values().all(|s| s == "PUBLISHED")).then_some(())
    })
    .await;
    // Past the settle and several censuses, at rest with the consumer gone: not a violation
    // (its work is on Kafka, the group behind). Watched until the checks themselves have
    // covered nine seconds, however long a busy machine takes to run them.
    let since = last_check(&app).await;
    let mut seen = BTreeMap::new();
    let guard = 2 * WITHIN;
    let watched = tokio::time::Instant::now() + guard;
    while last_check(&app).await < since + 9.0 {
        seen.extend(off(&app, coupon).await);
        assert!(
            tokio::time::Instant::now() < watched,
            "the check did not run all along: {guard:?} for nine seconds of checks"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    seen.extend(off(&app, coupon).await);
    // The consumer comes back; the books balance once it is done, and nothing was reported.
    let consumer = start(settings).await;
    consumer.wait_for_rows(coupon, 10).await;
    let after = last_check(&app).await;
    eventually("two more checks", WITHIN, || async {
        (last_check(&app).await >= after + 8.0).then_some(())
    })
    .await;
    seen.extend(off(&app, coupon).await);
    seen.extend(off(&consumer, coupon).await);
    assert_eq!(seen, BTreeMap::new());
    assert_eq!(stats_kinds(&app, coupon).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_row_deleted_by_hand_is_reported_and_cleared_when_put_back() {
    let app = spawn_app().await;
    let coupon = issued_drop(&app, 10, 20).await;

    // A persisted coupon lost from the database, its counter untouched.
    let (user, position, applied_at, issued_at): (i64, i32, DateTime<Utc>, DateTime<Utc>) =
        sqlx::query_as(
            "DELETE FROM coupon_issue WHERE coupon_id = $1 AND position = 5 \
             RETURNING user_id, position, applied_at, issued_at",
        )
        .bind(coupon)
        .fetch_one(&app.db)
        .await
        .unwrap();
    // PostgreSQL's own equality at once; the others once the event is at rest.
    until_reported(
        &app,
        coupon,
        &[
            ("issued_count", 1.0),
            ("log_size", 1.0),
            ("persisted", 1.0),
            ("positions_dense", 1.0),
            ("public_count", 1.0),
        ],
    )
    .await;
    // The live dashboard's numbers carry them.
    assert_eq!(
        stats_kinds(&app, coupon).await,
        [
            "issued_count",
            "log_size",
            "persisted",
            "positions_dense",
            "public_count"
        ]
    );
    // And the live dashboard, in a browser, turns its bar red with them.
    let shown = json!([{
        "books": "books do not balance: issued_count off by 1, log_size off by 1, \
                  persisted off by 1, positions_dense off by 1, public_count off by 1",
    }]);
    let run = browser_script(
        "dashboard.mjs",
        &[
            &app.address,
            &coupon.to_string(),
            &shown.to_string(),
            artifact("dashboard-books.png").to_str().unwrap(),
        ],
    )
    .output()
    .await
    .expect("node runs");
    assert!(
        run.status.success(),
        "the dashboard did not show the violations: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&run.stdout)
            .lines()
            .collect::<Vec<_>>(),
        ["ready", "state 0"]
    );

    sqlx::query(
        "INSERT INTO coupon_issue (coupon_id, user_id, position, applied_at, issued_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(coupon)
    .bind(user)
    .bind(position)
    .bind(applied_at)
    .bind(issued_at)
    .execute(&app.db)
    .await
    .unwrap();
    until_reported(&app, coupon, &[]).await;
    // Cleared, not forgotten: the series read 0.
    assert_eq!(violations(&app, coupon).await["positions_dense"], 0.0);
}

#[tokio::test]
async fn a_row_inserted_past_the_stock_is_reported_while_the_event_is_held() {
    let app = spawn_app().await;
    let coupon = issued_drop(&app, 10, 20).await;

    // A row no winner accounts for, past the stock. The watcher reads a position Redis never
    // handed out as Redis having lost admissions, and holds the event; PostgreSQL's books are
    // still checked meanwhile.
    sqlx::query(
        "INSERT INTO coupon_issue (coupon_id, user_id, position, applied_at, issued_at) \
         VALUES ($1, 999999, 11, now(), now())",
    )
    .bind(coupon)
    .execute(&app.db)
    .await
    .unwrap();
    until_reported(&app, coupon, &[("issued_count", 1.0), ("past_stock", 1.0)]).await;

    sqlx::query("DELETE FROM coupon_issue WHERE coupon_id = $1 AND user_id = 999999")
        .bind(coupon)
        .execute(&app.db)
        .await
        .unwrap();
    until_reported(&app, coupon, &[]).await;
}

/// The census counts statuses rather than reading them (see census.lua), so a status edited in
/// place by hand is the audit's to find (its full scan against the counts), while one deleted
/// is still seen by the watcher: the status hash's length against the counts' sum.
#[tokio::test]
async fn a_status_edited_or_dropped_in_redis_is_reported_and_cleared_when_put_back() {
    let app = spawn_app().await;
    let coupon = issued_drop(&app, 10, 20).await;
    let status_key = app.keys(coupon).status;
    let mut redis = app.redis.clone();
    let (winner, second) = {
        let admitted = app.admitted(coupon).await;
        (admitted[0], admitted[1])
    };
    let audit = || async {
        let report = fcfs_coupon::ops::audit(&app.gate, &app.db, CouponId::new(coupon).unwrap())
            .await
            .unwrap()
            .unwrap();
        let mut kinds: Vec<String> = (report.discrepancies.iter())
            .map(|d| format!("{:?}", d.kind))
            .collect();
        kinds.sort();
        kinds
    };

    // ISSUED set back to PUBLISHED: the counts still say ten ISSUED, the statuses nine.
    let _: () = redis::cmd("HSET")
        .arg(&status_key)
        .arg(winner)
        .arg("PUBLISHED")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        audit().await,
        ["IssuedCounterMismatch", "StatusCounterMismatch"]
    );

    // A winner's status gone: a place with no stage, seen in O(1). Exactly `stages`: the edit
    // above is invisible to the census (no `persisted`, no `kafka_lag`).
    let _: () = redis::cmd("HDEL")
        .arg(&status_key)
        .arg(second)
        .query_async(&mut redis)
        .await
        .unwrap();
    until_reported(&app, coupon, &[("stages", 1.0)]).await;

    for user in [winner, second] {
        let _: () = redis::cmd("HSET")
            .arg(&status_key)
            .arg(user)
            .arg("ISSUED")
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    until_reported(&app, coupon, &[]).await;
    assert_eq!(audit().await, Vec::<String>::new());
    app.assert_counted(coupon).await;
}

#[tokio::test]
async fn a_pending_winner_dropped_is_reported_stranded_and_cleared_once_put_back_and_issued() {
    // The API alone: winners wait in pending.
    let settings = isolated_settings();
    let app = start_roles(settings.clone(), &[Role::Api]).await;
    let coupon = app.create_stock(3).await;
    for user in 1..=3 {
        assert_eq!(app.apply(coupon, user).await.status(), StatusCode::ACCEPTED);
    }
    let pending = app.pending_key(coupon);
    let mut redis = app.redis.clone();
    let dropped: Vec<String> = redis::cmd("LRANGE")
        .arg(&pending)
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(dropped.len(), 3);
    // The winners' pending entries lost (as a lost write would): told 202, never published.
    let _: () = redis::cmd("DEL")
        .arg(&pending)
        .query_async(&mut redis)
        .await
        .unwrap();
    until_reported(&app, coupon, &[("stranded", 3.0)]).await;

    // Put back, and an instance with an issuer and a consumer issues them.
    let _: () = redis::cmd("RPUSH")
        .arg(&pending)
        .arg(&dropped)
        .query_async(&mut redis)
        .await
        .unwrap();
    let full = start(settings).await;
    full.wait_for_rows(coupon, 3).await;
    until_reported(&app, coupon, &[]).await;
}
