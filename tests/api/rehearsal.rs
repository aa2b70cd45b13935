//! Rehearsing a drop (`fcfs-bench rehearse`) against the local stack, and the rules that keep
//! a rehearsal apart from real events: its own tokens, good for rehearsal events only and never
//! admin; not listed; its rows never among a real user's coupons; deleted with one admin call.

use std::collections::BTreeSet;
use std::time::Duration;

use fcfs_bench::rehearse::{self, RehearseOptions};
use fcfs_coupon::auth::TokenKeys;
use fcfs_coupon::configuration::Settings;
use fcfs_coupon::domain::UserId;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    assert_problem, eventually, isolated_settings, refills, spawn_app, spawn_app_with, start_roles,
    TestApp,
};
use fcfs_coupon::startup::Role;

fn options(app: &TestApp, out: &std::path::Path) -> RehearseOptions {
    RehearseOptions {
        url: app.address.clone(),
        users: 400,
        stock: 40,
        ramp: 1.0,
        concurrency: 16,
        pollers: 4,
        reapply: 0.25,
        admin_token: Some(app.admin_token()),
        // Generous: a loaded CI machine must not fail the run on speed; the breach under test
        // is the drain's.
        max_p99_ms: 10_000.0,
        max_position_p99_ms: 10_000.0,
        max_drain_ms: 20_000.0,
        max_sold_out_ms: None,
        max_errors: 0,
        out: out.to_owned(),
        keep: false,
    }
}

fn rehearsal_token(settings: &Settings, user: i64) -> String {
    let secret = settings
        .auth
        .checked_rehearsal_secret(settings.env)
        .unwrap()
        .expect("a rehearsal secret (development default)");
    TokenKeys::rehearsal(&secret)
        .mint(UserId::new(user).unwrap(), false, Duration::from_secs(600))
        .unwrap()
}

fn out_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("fcfs-rehearse-{}", uuid::Uuid::new_v4()))
}

#[tokio::test]
async fn a_rehearsal_against_the_stack_passes_its_verdict_and_leaves_nothing_behind() {
    let app = spawn_app().await;
    let out = out_dir();

    let verdict = rehearse::run(&app.settings, &options(&app, &out))
        .await
        .expect("the rehearsal runs");

    let failed: Vec<_> = verdict.checks.iter().filter(|c| !c.passed).collect();
    assert!(verdict.passed, "breaches: {failed:?}");
    let names: Vec<&str> = verdict.checks.iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            "exact issuance",
            "positions dense",
            "one per user",
            "real-time order",
            "apply p99",
            "position p99",
            "sold-out time",
            "drain time",
            "errors"
        ]
    );
    assert_eq!(verdict.admitted, 40);
    assert_eq!(verdict.audit["database"]["rows"], 40);
    let routes: BTreeSet<&str> = verdict.routes.keys().map(String::as_str).collect();
    assert_eq!(
        routes,
        BTreeSet::from(["apply", "applyAgain", "applyEarly", "position", "readEvent"])
    );
    // Every application of the crowd was answered 202 or 410, the early ones 409.
    assert_eq!(verdict.answers["apply"].values().sum::<u64>(), 400);
    assert_eq!(verdict.answers["apply"][&202], 40);
    assert_eq!(
        verdict.answers["applyEarly"].keys().collect::<Vec<_>>(),
        [&409]
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["passed"], true);
    let svg = std::fs::read_to_string(out.join("chart.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("Winners"));

    // Deleted with everything it wrote.
    let coupon = verdict.coupon_id;
    assert_problem(
        app.get_coupon(&coupon.to_string()).await,
        StatusCode::NOT_FOUND,
        "COUPON_NOT_FOUND",
    )
    .await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM coupon_issue WHERE coupon_id = $1")
        .bind(coupon)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    let mut redis = app.redis.clone();
    for key in app.keys(coupon).all() {
        let exists: bool = redis::cmd("EXISTS")
            .arg(key)
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!(!exists, "{key} is left");
    }
    std::fs::remove_dir_all(out).ok();
}

#[tokio::test]
async fn with_the_consumer_stopped_the_rehearsal_fails_naming_the_drain_and_is_kept() {
    // The API and the issuer only: winners reach Kafka and stay there.
    let app = start_roles(isolated_settings(), &[Role::Api, Role::Issuer]).await;
    let out = out_dir();
    let mut opts = options(&app, &out);
    opts.max_drain_ms = 2_000.0;

    let verdict = rehearse::run(&app.settings, &opts).await.unwrap();

    assert!(!verdict.passed);
    let breached: Vec<&str> = verdict
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name)
        .collect();
    assert_eq!(breached, ["exact issuance", "drain time"]);
    let drain = verdict
        .checks
        .iter()
        .find(|c| c.name == "drain time")
        .unwrap();
    assert_eq!(
        drain.measured,
        "40 of 40 winners not ISSUED when the wait ended: 40 PUBLISHED"
    );
    // Its winners are still on their way: the delete refused, the event kept.
    let coupon = verdict.coupon_id;
    assert_eq!(app.coupon_json(coupon).await["admitted"], 40);
    let resp = app
        .client
        .delete(app.url(&format!("/coupons/{coupon}")))
        .bearer_auth(app.admin_token())
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::CONFLICT, "EVENT_BUSY").await;
    std::fs::remove_dir_all(out).ok();
}

#[tokio::test]
async fn a_rehearsal_token_is_refused_on_a_real_event_and_is_never_admin() {
    let app = spawn_app().await;
    let real = app.create_stock(5).await;
    let rehearsal = app
        .create_coupon(json!({"name": "Rehearsal", "stock": 5, "rehearsal": true}))
        .await;
    let token = rehearsal_token(&app.settings, 7);

    // On a real event: refused, and nothing changes.
    let apply = app.apply_with(&real.to_string(), Some(&token)).await;
    assert_problem(apply, StatusCode::FORBIDDEN, "FORBIDDEN").await;
    let position = app
        .client
        .get(app.url(&format!("/coupons/{real}/position")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_problem(position, StatusCode::FORBIDDEN, "FORBIDDEN").await;
    assert!(app.admitted(real).await.is_empty());

    // On the rehearsal: admitted.
    let apply = app.apply_with(&rehearsal.to_string(), Some(&token)).await;
    assert_eq!(apply.status(), StatusCode::ACCEPTED);
    assert_eq!(app.admitted(rehearsal).await, [7]);

    // Never admin, even with the role claim, and never with the service's own key.
    let secret = app
        .settings
        .auth
        .checked_rehearsal_secret(app.settings.env)
        .unwrap()
        .unwrap();
    let claims = json!({"sub": "7", "exp": chrono::Utc::now().timestamp() + 600, "role": "admin"});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("rehearsal".into());
    let with_role = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(
            secrecy::ExposeSecret::expose_secret(&secret).as_bytes(),
        ),
    )
    .unwrap();
    let create = app
        .post_coupon(Some(&with_role), &json!({"name": "x", "stock": 1}))
        .await;
    assert_problem(create, StatusCode::FORBIDDEN, "FORBIDDEN").await;
    let own_key_as_rehearsal = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(
            secrecy::ExposeSecret::expose_secret(&app.settings.auth.secret()).as_bytes(),
        ),
    )
    .unwrap();
    let create = app
        .post_coupon(
            Some(&own_key_as_rehearsal),
            &json!({"name": "x", "stock": 1}),
        )
        .await;
    assert_problem(create, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;

    // Not listed; a real user of the same id never sees the rehearsal's coupon.
    let list = app.get("/coupons").await.json::<Value>().await.unwrap();
    let listed: Vec<i64> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, [real]);
    app.wait_for_rows(rehearsal, 1).await;
    let mine = |token: String| {
        let app = &app;
        async move {
            let resp = app
                .client
                .get(app.url("/me/coupons"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let body: Value = resp.json().await.unwrap();
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["couponId"].as_i64().unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(mine(app.user_token(7)).await, Vec::<i64>::new());
    assert_eq!(mine(token.clone()).await, [rehearsal]);

    // One admin call removes the rehearsal; a real event cannot be deleted.
    let delete = |id: i64| {
        app.client
            .delete(app.url(&format!("/coupons/{id}")))
            .bearer_auth(app.admin_token())
            .send()
    };
    assert_problem(
        delete(real).await.unwrap(),
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
    )
    .await;
    for token in [app.user_token(7), token.clone()] {
        let resp = app
            .client
            .delete(app.url(&format!("/coupons/{rehearsal}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_problem(resp, StatusCode::FORBIDDEN, "FORBIDDEN").await;
    }
    assert_eq!(app.coupon_json(real).await["stock"], 5);
    // Not while a winner is published and not yet issued, even with the topic drained (here
    // set by hand, once the consumer group has committed past every message).
    let kafka = &app.settings.kafka;
    eventually(
        "the consumer group caught up",
        Duration::from_secs(30),
        || async {
            let offsets = fcfs_coupon::kafka::group_offsets(kafka, &kafka.topic, &kafka.group_id)
                .await
                .unwrap();
            (offsets.behind() == 0).then_some(())
        },
    )
    .await;
    let status = app.keys(rehearsal).status;
    let mut redis = app.redis.clone();
    for (expected, set) in [
        (StatusCode::CONFLICT, "PUBLISHED"),
        (StatusCode::NO_CONTENT, "ISSUED"),
    ] {
        let _: () = redis::cmd("HSET")
            .arg(&status)
            .arg(7)
            .arg(set)
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(
            delete(rehearsal).await.unwrap().status(),
            expected,
            "with {set}"
        );
    }
    assert_problem(
        delete(rehearsal).await.unwrap(),
        StatusCode::NOT_FOUND,
        "COUPON_NOT_FOUND",
    )
    .await;
    assert_eq!(mine(token).await, Vec::<i64>::new());
}

#[tokio::test]
async fn a_rehearsals_crowd_is_not_held_to_the_per_address_limit_and_real_users_are() {
    let app = spawn_app_with(|s| {
        s.rate_limit.per_address_per_sec = 1;
        s.rate_limit.per_address_burst = 2;
    })
    .await;
    let real = app.create_stock(100).await;
    let rehearsal = app
        .create_coupon(json!({"name": "Rehearsal", "stock": 100, "rehearsal": true}))
        .await;

    let mut real_answers = Vec::new();
    let mut rehearsal_answers = Vec::new();
    let started = std::time::Instant::now();
    for user in 1..=10 {
        real_answers.push(app.apply(real, user).await.status());
        let token = rehearsal_token(&app.settings, user);
        let resp = app.apply_with(&rehearsal.to_string(), Some(&token)).await;
        rehearsal_answers.push(resp.status());
    }
    let took = started.elapsed();

    // Ten users from one address: the burst of two (and what the bucket refilled while they
    // applied), then 429 for real users.
    let through = real_answers
        .iter()
        .filter(|s| **s != StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(
        through <= 2 + refills(1, took),
        "{through} through in {took:.1?}: {real_answers:?}"
    );
    assert_eq!(rehearsal_answers, vec![StatusCode::ACCEPTED; 10]);
}

#[tokio::test]
async fn a_rehearsal_deleted_on_one_instance_is_unknown_on_the_others_not_held() {
    let settings = isolated_settings();
    let a = crate::helpers::start(settings.clone()).await;
    let b = crate::helpers::start(settings).await;
    let rehearsal = a
        .create_coupon(json!({"name": "Rehearsal", "stock": 5, "rehearsal": true}))
        .await;
    let token = rehearsal_token(&a.settings, 3);
    assert_eq!(
        b.apply_with(&rehearsal.to_string(), Some(&token))
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    a.wait_for_rows(rehearsal, 1).await;
    eventually("the rehearsal deleted", Duration::from_secs(30), || async {
        let resp = a
            .client
            .delete(a.url(&format!("/coupons/{rehearsal}")))
            .bearer_auth(a.admin_token())
            .send()
            .await
            .unwrap();
        (resp.status() == StatusCode::NO_CONTENT).then_some(())
    })
    .await;

    // B saw it exist; once its watcher finds PostgreSQL without it, it is unknown there too.
    let position = || async {
        b.client
            .get(b.url(&format!("/coupons/{rehearsal}/position")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
    };
    eventually("B answers 404", Duration::from_secs(15), || async {
        (position().await.status() == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    assert_problem(position().await, StatusCode::NOT_FOUND, "COUPON_NOT_FOUND").await;
    let other = rehearsal_token(&b.settings, 4);
    let apply = b.apply_with(&rehearsal.to_string(), Some(&other)).await;
    assert_problem(apply, StatusCode::NOT_FOUND, "COUPON_NOT_FOUND").await;
}
