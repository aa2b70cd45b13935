//! The crowd at the door (issue 35): readers refreshing the event page and polling their place
//! cost the event's Redis a read a second, not a read each. Each test runs the API alone on a
//! Redis of its own that logs every command (`SLOWLOG` at 0 µs) and counts the reads of the
//! event's snapshot script: a crowd's reads are held to one a second for as long as they took,
//! so a busy machine changes the bound, never the verdict; without the copies they number one
//! per request.

use std::time::{Duration, Instant};

use fcfs_coupon::configuration::Settings;
use fcfs_coupon::startup::Role;
use futures::future::join_all;
use reqwest::StatusCode;

use crate::helpers::{isolated_settings, refills, start_roles, PrivateRedis, TestApp};

/// Starts logging every command afresh.
async fn reset(redis: &PrivateRedis) {
    let mut conn = redis.connection().await;
    for (name, value) in [
        ("slowlog-log-slower-than", "0"),
        ("slowlog-max-len", "1000000"),
    ] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// Runs of the snapshot script (the read behind an event page and a position poll) on
/// `coupon`'s keys since the last [`reset`].
async fn snapshot_reads(redis: &PrivateRedis, coupon: i64) -> usize {
    let sha = redis::Script::new(include_str!("../../src/gate/snapshot.lua"))
        .get_hash()
        .to_owned();
    let tag = format!("{{c{coupon}}}");
    let log: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        _ => String::new(),
    };
    log.iter()
        .filter(|entry| {
            let redis::Value::Array(fields) = entry else {
                return false;
            };
            let Some(redis::Value::Array(args)) = fields.get(3) else {
                return false;
            };
            let args: Vec<String> = args.iter().map(text).collect();
            args.first()
                .is_some_and(|c| c.eq_ignore_ascii_case("evalsha"))
                && args.get(1) == Some(&sha)
                && args.iter().any(|a| a.contains(&tag))
        })
        .count()
}

/// The API alone on a Redis of its own.
async fn api_on_own_redis(customize: impl FnOnce(&mut Settings)) -> (PrivateRedis, TestApp) {
    let redis = PrivateRedis::start().await;
    let mut settings = isolated_settings();
    settings.redis.url = redis.url().into();
    settings.rate_limit.per_user_per_sec = 0;
    settings.rate_limit.per_address_per_sec = 0;
    customize(&mut settings);
    let app = start_roles(settings, &[Role::Api]).await;
    (redis, app)
}

/// Reads a crowd that took `took` may cost: one when it starts, one as each second's copy
/// runs out.
fn at_most(took: Duration) -> usize {
    2 + took.as_secs() as usize
}

/// `readers` concurrent clients asking `path` in a loop for at least `for_at_least`, each at
/// least [`EACH_AT_LEAST`] times (a slow machine takes longer, never asks less); every answer's
/// status, and how long it took.
async fn crowd(
    app: &TestApp,
    path: &str,
    readers: usize,
    for_at_least: Duration,
) -> (Vec<StatusCode>, Duration) {
    let started = Instant::now();
    let statuses = join_all((0..readers).map(|_| async {
        let mut seen = Vec::new();
        while started.elapsed() < for_at_least || seen.len() < EACH_AT_LEAST {
            seen.push(app.get(path).await.status());
        }
        seen
    }))
    .await;
    (statuses.concat(), started.elapsed())
}

/// Requests each client makes at least: enough that a read per request would exceed the
/// bound by far, however long they took.
const EACH_AT_LEAST: usize = 50;

#[tokio::test]
async fn a_crowd_refreshing_an_event_costs_its_redis_a_read_a_second() {
    let (redis, app) = api_on_own_redis(|_| {}).await;
    let coupon = app.create_stock(100).await;
    let page = format!("/coupons/{coupon}");
    reset(&redis).await;
    let (statuses, took) = crowd(&app, &page, 64, Duration::from_secs(2)).await;
    let reads = snapshot_reads(&redis, coupon).await;

    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let most = at_most(took);
    assert!(
        (1..=most).contains(&reads),
        "{} page reads read Redis {reads} times in {took:.1?} (at most {most})",
        statuses.len()
    );
    assert!(statuses.len() > most, "the crowd was too small to tell");
}

#[tokio::test]
async fn made_up_ids_are_remembered_unknown_for_a_second_and_stats_too() {
    let (redis, app) = api_on_own_redis(|_| {}).await;
    app.create_stock(5).await;
    let unknown = 987_654_321_i64;
    for path in [
        format!("/coupons/{unknown}"),
        format!("/coupons/{unknown}/stats"),
    ] {
        reset(&redis).await;
        let (statuses, took) = crowd(&app, &path, 32, Duration::from_secs(2)).await;
        let reads = snapshot_reads(&redis, unknown).await;
        assert!(statuses.iter().all(|s| *s == StatusCode::NOT_FOUND));
        let most = at_most(took);
        assert!(
            (1..=most).contains(&reads),
            "{} reads of {path} read Redis {reads} times in {took:.1?} (at most {most})",
            statuses.len()
        );
        assert!(statuses.len() > most, "the crowd was too small to tell");
    }
}

#[tokio::test]
async fn public_reads_say_how_long_to_keep_them_and_answer_if_none_match() {
    let (_redis, app) = api_on_own_redis(|_| {}).await;
    let coupon = app.create_stock(5).await;
    for path in [
        "/coupons".to_owned(),
        format!("/coupons/{coupon}"),
        format!("/coupons/{coupon}/stats"),
    ] {
        let first = app.get(&path).await;
        assert_eq!(first.status(), StatusCode::OK, "{path}");
        assert_eq!(
            first.headers()["cache-control"],
            "public, max-age=1",
            "{path}"
        );
        let tag = first.headers()["etag"].to_str().unwrap().to_owned();
        assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
        let body = first.bytes().await.unwrap();
        // Within the copy's second the body is the same, so its tag is too; past it, a new
        // copy may differ, so ask until one answer matched the tag it was sent.
        let again = crate::helpers::eventually("a 304", Duration::from_secs(10), || async {
            let resp = (app.client.get(app.url(&path)))
                .header("If-None-Match", &tag)
                .send()
                .await
                .unwrap();
            (resp.status() == StatusCode::NOT_MODIFIED).then_some(resp)
        })
        .await;
        assert_eq!(again.headers()["etag"], tag.as_str());
        assert!(again.bytes().await.unwrap().is_empty());
        assert!(!body.is_empty());
    }
    // A user's own answers are not for a shared cache.
    let position = app.position(coupon, 1).await;
    assert!(position.headers().get("cache-control").is_none());
    assert!(position.headers().get("etag").is_none());
}

#[tokio::test]
async fn a_user_polling_faster_than_told_costs_redis_a_read_a_second() {
    let (redis, app) = api_on_own_redis(|_| {}).await;
    let coupon = app.create_stock(5).await;
    assert_eq!(app.apply(coupon, 1).await.status(), StatusCode::ACCEPTED);
    let path = format!("/coupons/{coupon}/position");

    reset(&redis).await;
    let started = Instant::now();
    let mut polls = 0;
    // At least two seconds, and until the polls outnumber twice what the copy allows them.
    while started.elapsed() < Duration::from_secs(2) || polls <= 2 * at_most(started.elapsed()) {
        let answer = app.get_json_as(&path, 1).await;
        assert_eq!(answer["status"], "ADMITTED");
        assert_eq!(answer["position"], 1);
        assert!(answer["retryAfterMs"].as_u64().is_some());
        polls += 1;
    }
    let (reads, took) = (snapshot_reads(&redis, coupon).await, started.elapsed());
    let most = at_most(took);
    assert!(
        (1..=most).contains(&reads),
        "{polls} polls read Redis {reads} times in {took:.1?} (at most {most})"
    );
    assert!(polls > most, "too few polls to tell");
}

#[tokio::test]
async fn a_users_database_reads_are_limited_and_told_when_to_come_back() {
    let (_redis, app) = api_on_own_redis(|_| {}).await;
    let started = Instant::now();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..40 {
        let resp = (app.client.get(app.url("/me/coupons")))
            .bearer_auth(app.user_token(5))
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = resp.headers().get("retry-after").cloned();
        }
        statuses.push(resp.status());
    }
    let took = started.elapsed();
    let passed = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    // 10 at once, 2 a second after that.
    assert!(passed >= 10, "{statuses:?}");
    assert!(
        passed <= 10 + refills(2, took),
        "{passed} passed in {took:.1?}"
    );
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS));
    assert!(retry_after.is_some_and(|v| v.to_str().unwrap().parse::<u64>().unwrap() >= 1));
    // Another user has a bucket of their own.
    let other = (app.client.get(app.url("/me/coupons")))
        .bearer_auth(app.user_token(6))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_storm_of_probes_and_scrapes_on_the_ops_port_costs_redis_a_ping_a_second() {
    let (redis, app) = api_on_own_redis(|_| {}).await;
    let ops = app.ops_address.clone();
    crate::helpers::eventually("the ops port ready", Duration::from_secs(10), || async {
        let resp = app
            .client
            .get(format!("{ops}/health/ready"))
            .send()
            .await
            .unwrap();
        (resp.status() == StatusCode::OK).then_some(())
    })
    .await;
    reset(&redis).await;
    let started = Instant::now();
    let answers = join_all((0..200).map(|i| {
        let path = if i % 2 == 0 {
            "/health/ready"
        } else {
            "/metrics"
        };
        app.client.get(format!("{ops}{path}")).send()
    }))
    .await;
    let took = started.elapsed();
    let pings = redis.pings().await;
    assert!(answers
        .iter()
        .all(|r| r.as_ref().unwrap().status() == StatusCode::OK));
    let most = at_most(took) as u64;
    assert!(
        pings <= most,
        "{pings} PINGs for 200 ops requests in {took:.1?} (at most {most})"
    );
}
