//! Redis losing its data: every key of the service's prefix deleted, then the service (or
//! `fcfs-coupon reconcile`) rebuilds the coupons from PostgreSQL.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    assert_settled, eventually, isolated_settings, run_command, spawn_app, spawn_app_with, start,
    MANUAL,
};

#[tokio::test]
async fn after_redis_loses_every_key_a_restart_restores_winners_from_postgres() {
    // Arrange: ten winners issued, then Redis forgets everything and the service restarts.
    let mut settings = isolated_settings();
    // The winner below polls until the restore is done; its bucket is not what is tested.
    settings.rate_limit.per_user_per_sec = 0;
    let app = start(settings.clone()).await;
    let coupon = app.create_stock(30).await;
    assert!(app
        .apply_all(coupon, 1..=10, 10)
        .await
        .iter()
        .all(|s| *s == StatusCode::ACCEPTED));
    let before = assert_settled(&app, coupon, 30).await;
    app.wipe_redis().await;
    let _database_kept = app.stop().await;
    let app = start(settings).await;

    // Act + Assert: a winner re-applying gets the same position back (once the restore is done).
    let (user, position) = before[2];
    let again: Value = eventually("the coupon restored", Duration::from_secs(60), || async {
        let resp = app.apply(coupon, user).await;
        (resp.status() == StatusCode::OK).then_some(resp.json::<Value>().await.unwrap())
    })
    .await;
    assert_eq!(again["position"], position);
    assert_eq!(again["status"], "ISSUED");

    // New applicants continue after the last position; the total stays within the stock.
    let statuses = app.apply_all(coupon, 11..=40, 8).await;
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::ACCEPTED)
            .count(),
        20
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::GONE).count(),
        10
    );
    for user in 1..=10 {
        assert_eq!(app.apply(coupon, user).await.status(), StatusCode::OK);
    }
    let rows = assert_settled(&app, coupon, 30).await;
    assert_eq!(rows.len(), 30);
    assert_eq!(&rows[..10], &before[..]);
}

#[tokio::test]
async fn reconcile_keeps_lost_positions_spent_and_audit_reports_them() {
    // Arrange: three persisted winners at positions 1, 2 and 4: position 3's winner was lost
    // with Redis' memory before it was published.
    let app = spawn_app().await;
    let coupon = app.create_stock(5).await;
    for (user, position) in [(101, 1), (102, 2), (104, 4)] {
        sqlx::query(
            "INSERT INTO coupon_issue (coupon_id, user_id, position, applied_at) \
             VALUES ($1, $2, $3, now() - make_interval(secs => 10 - $3))",
        )
        .bind(coupon)
        .bind(user)
        .bind(position)
        .execute(&app.db)
        .await
        .unwrap();
    }
    sqlx::query("UPDATE coupon SET issued_count = 3 WHERE id = $1")
        .bind(coupon)
        .execute(&app.db)
        .await
        .unwrap();
    app.wipe_redis().await;
    let audit = ["audit", "--coupon", &coupon.to_string()];

    // Act + Assert: the audit fails on the missing state; reconcile restores it.
    let (clean, report) = run_command(&app.settings, &audit).await;
    assert!(!clean, "audit exits non-zero: {report}");
    let report: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["discrepancies"][0]["kind"], "REDIS_STATE_MISSING");

    let (ok, restored) = run_command(&app.settings, &["reconcile"]).await;
    assert!(ok, "{restored}");
    let restored: Value = serde_json::from_str(&restored).unwrap();
    assert_eq!(restored["restored"][0]["winners"], 3);

    // Winners keep their positions; the lost position stays spent, so one place is left.
    let resp = app.apply(coupon, 104).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["position"], 4);
    let resp = app.apply(coupon, 200).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.json::<Value>().await.unwrap()["position"], 5);
    assert_eq!(app.apply(coupon, 201).await.status(), StatusCode::GONE);
    app.wait_for_rows(coupon, 4).await;

    let (clean, report) = run_command(&app.settings, &audit).await;
    assert!(!clean);
    let report: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["discrepancyCount"], 1, "{report}");
    assert_eq!(report["discrepancies"][0]["kind"], "LOST_POSITION");
    assert_eq!(report["discrepancies"][0]["position"], 3);
    assert_eq!(report["database"]["rows"], 4);
    assert_eq!(report["redis"]["admitted"], 5);
}

#[tokio::test]
async fn the_admin_audit_endpoint_reports_a_clean_coupon() {
    let app = spawn_app().await;
    let coupon = app.create_stock(5).await;
    app.apply_all(coupon, 1..=3, 3).await;
    assert_settled(&app, coupon, 5).await;

    let path = format!("/coupons/{coupon}/audit");
    let resp = app
        .client
        .get(app.url(&path))
        .bearer_auth(app.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let report: Value = resp.json().await.unwrap();
    assert_eq!(report["consistent"], true, "{report}");
    assert_eq!(report["redis"]["issued"], 3);
    assert_eq!(report["database"]["issuedCount"], 3);

    let as_user = app
        .client
        .get(app.url(&path))
        .bearer_auth(app.user_token(2))
        .send()
        .await
        .unwrap();
    assert_eq!(as_user.status(), StatusCode::FORBIDDEN);
    let (ok, _) = run_command(&app.settings, &["audit", "--coupon", &coupon.to_string()]).await;
    assert!(ok, "a clean coupon's audit exits 0");
}

#[tokio::test]
async fn failed_winners_are_redriven_once_their_cause_is_fixed() {
    // Arrange: the coupon's row is gone when its winners reach the consumer (say, a database
    // restored from a backup older than the event), so each of them ends FAILED.
    let app = spawn_app_with(|s| s.issuer.schedule = MANUAL.into()).await;
    let coupon = app.create_stock(5).await;
    let (name, stock, created_at): (String, i32, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT name, stock, created_at FROM coupon WHERE id = $1")
            .bind(coupon)
            .fetch_one(&app.db)
            .await
            .unwrap();
    sqlx::query("DELETE FROM coupon WHERE id = $1")
        .bind(coupon)
        .execute(&app.db)
        .await
        .unwrap();
    assert!(app
        .apply_all(coupon, 1..=3, 3)
        .await
        .iter()
        .all(|s| *s == StatusCode::ACCEPTED));
    assert_eq!(app.issuer().run_once().await.unwrap().published, 3);
    eventually("three FAILED winners", Duration::from_secs(20), || async {
        let statuses = app.statuses(coupon).await;
        (statuses.values().filter(|s| *s == "FAILED").count() == 3).then_some(())
    })
    .await;
    app.assert_counted(coupon).await;

    // The cause is fixed: the row is back.
    sqlx::query(
        "INSERT INTO coupon (id, name, stock, created_at) OVERRIDING SYSTEM VALUE \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(coupon)
    .bind(name)
    .bind(stock)
    .bind(created_at)
    .execute(&app.db)
    .await
    .unwrap();
    let audit = ["audit", "--coupon", &coupon.to_string()];
    let (clean, report) = run_command(&app.settings, &audit).await;
    assert!(!clean);
    let report: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["discrepancyCount"], 3, "{report}");
    assert_eq!(report["discrepancies"][0]["kind"], "WINNER_FAILED");

    // Act: redrive, twice (the second finds nothing to do), then one issuer tick.
    let redrive = ["redrive", "--coupon", &coupon.to_string()];
    let (ok, first) = run_command(&app.settings, &redrive).await;
    assert!(ok, "{first}");
    let (ok, second) = run_command(&app.settings, &redrive).await;
    assert!(ok, "{second}");
    assert_eq!(
        serde_json::from_str::<Value>(&first).unwrap()["redriven"],
        3
    );
    assert_eq!(
        serde_json::from_str::<Value>(&second).unwrap()["redriven"],
        0
    );
    assert_eq!(app.issuer().run_once().await.unwrap().published, 3);

    // Assert: every winner persisted once, at the place told; the audit is clean again.
    app.wait_for_rows(coupon, 3).await;
    let rows = app.issued_rows(coupon).await;
    assert_eq!(rows.iter().map(|(_, p)| *p).collect::<Vec<_>>(), [1, 2, 3]);
    eventually("every winner ISSUED", Duration::from_secs(10), || async {
        let statuses = app.statuses(coupon).await;
        statuses.values().all(|s| s == "ISSUED").then_some(())
    })
    .await;
    let (clean, report) = run_command(&app.settings, &audit).await;
    assert!(clean, "{report}");
    app.assert_counted(coupon).await;
}
