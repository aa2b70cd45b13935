//! Scaling out: many events at once over many partitions and consumer processes, and rate
//! limits shared by every instance. Runs against one Redis and, with `APP_REDIS__MODE=cluster`
//! (scripts/test.sh), against the cluster, where the events spread over every master.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use fcfs_coupon::configuration::{RateLimitScope, RedisMode};
use fcfs_coupon::startup::Role;
use futures::{stream, StreamExt};
use reqwest::StatusCode;

use crate::helpers::{eventually, isolated_settings, start, start_roles, ServiceProcess, TestApp};
use crate::issuance::{assert_issued_exactly, crowd};

#[tokio::test]
async fn twenty_events_over_six_partitions_and_three_consumer_processes_each_land_exactly() {
    // Arrange: the API and issuer in this process; three consumer processes share the group.
    let mut settings = isolated_settings();
    settings.kafka.partitions = 6;
    let app = start_roles(settings.clone(), &[Role::Api, Role::Issuer]).await;
    let consumers = [
        ServiceProcess::spawn(&settings, &["consumer"]).await,
        ServiceProcess::spawn(&settings, &["consumer"]).await,
        ServiceProcess::spawn(&settings, &["consumer"]).await,
    ];
    eventually(
        "the group to share the six partitions",
        Duration::from_secs(60),
        || async {
            let owned: Vec<Vec<u32>> = consumers.iter().map(assigned).collect();
            let all: BTreeSet<u32> = owned.iter().flatten().copied().collect();
            (owned.iter().all(|p| !p.is_empty()) && all.len() == 6).then_some(())
        },
    )
    .await;
    let mut coupons = Vec::new();
    for _ in 0..20 {
        coupons.push(app.create_stock(30).await);
    }

    // Act: 60 applicants on each event, every event at once.
    let app = &app;
    let told: Vec<_> = stream::iter(&coupons)
        .map(|&coupon| async move {
            let users = (1..=60).map(move |u| coupon * 1_000 + u);
            (coupon, crowd(&[app], coupon, users).await)
        })
        .buffer_unordered(20)
        .collect()
        .await;

    // Assert: every event has exactly its stock in rows, dense positions, each as told.
    for (coupon, told) in &told {
        assert_eq!(told.len(), 30, "event {coupon}: the stock was admitted");
        app.wait_for_rows(*coupon, 30).await;
        assert_issued_exactly(app, *coupon, told, 30).await;
    }
    // Every consumer process persisted rows: the six partitions were shared out.
    for consumer in &consumers {
        let persisted = series(consumer, "fcfs_consumer_rows_persisted_total").await;
        assert!(persisted > 0.0, "a consumer process was given no partition");
    }
    assert_eq!(app.failed_events().await, 0);
    if app.settings.redis.mode == RedisMode::Cluster {
        assert_every_master_holds_events(app).await;
    }
}

async fn assert_every_master_holds_events(app: &TestApp) {
    let held = app.keys_per_master().await;
    assert_eq!(held.len(), 3, "three masters: {held:?}");
    for (port, keys) in held {
        assert!(keys > 0, "the master on {port} holds no event's keys");
    }
}

/// The partitions a consumer process owns now: its log's last assignment, unless revoked since.
fn assigned(process: &ServiceProcess) -> Vec<u32> {
    let log = std::fs::read_to_string(&process.log).unwrap_or_default();
    let last = log
        .lines()
        .rev()
        .find(|l| l.contains("partitions assigned") || l.contains("partitions revoked"));
    let Some(line) = last.filter(|l| l.contains("partitions assigned")) else {
        return Vec::new();
    };
    let list = line.split("partitions=[").nth(1).unwrap_or("");
    let list = list.split(']').next().unwrap_or("");
    list.split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

/// One series of a process's `/metrics`.
async fn series(process: &ServiceProcess, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", process.ops_address))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Three instances on shared buckets; `limit` sets the quotas on the settings.
async fn three_instances(
    limit: impl Fn(&mut fcfs_coupon::configuration::Settings),
) -> [TestApp; 3] {
    let mut settings = isolated_settings();
    settings.rate_limit.scope = RateLimitScope::Shared;
    limit(&mut settings);
    [
        start(settings.clone()).await,
        start(settings.clone()).await,
        start(settings).await,
    ]
}

#[tokio::test]
async fn one_user_gets_the_configured_burst_across_three_instances_not_three_times_it() {
    let apps = three_instances(|s| {
        s.rate_limit.per_user_per_sec = 1;
        s.rate_limit.per_user_burst = 5;
    })
    .await;
    let (apps, coupon) = (&apps, apps[0].create_stock(10).await);

    // Act: one user, 30 applications at once, spread over the three instances.
    let (statuses, refills) = all_at_once(apps, coupon, std::iter::repeat_n(7, 30)).await;

    // Assert: the burst, once, for all instances together (per instance it would be 15).
    let through = count(&statuses, |s| s.is_success());
    let limited = count(&statuses, |s| s == StatusCode::TOO_MANY_REQUESTS);
    assert!((5..=5 + refills).contains(&through), "{statuses:?}");
    assert_eq!(through + limited, 30);
    assert_eq!(apps[0].admitted(coupon).await, [7]);
    // A limited request is not counted.
    apps[0].until_applications(coupon, through as u64).await;
}

#[tokio::test]
async fn one_address_gets_the_configured_burst_across_three_instances() {
    let apps = three_instances(|s| {
        s.rate_limit.per_user_per_sec = 0;
        s.rate_limit.per_address_per_sec = 1;
        s.rate_limit.per_address_burst = 12;
    })
    .await;
    let (apps, coupon) = (&apps, apps[0].create_stock(100).await);

    // Act: 60 users from one address (127.0.0.1), spread over the three instances.
    let (statuses, refills) = all_at_once(apps, coupon, 1..=60).await;

    // Assert: the burst, once, for all instances together (per instance it would be 36).
    let admitted = count(&statuses, |s| s == StatusCode::ACCEPTED);
    let limited = count(&statuses, |s| s == StatusCode::TOO_MANY_REQUESTS);
    assert!((12..=12 + refills).contains(&admitted), "{statuses:?}");
    assert_eq!(admitted + limited, 60);
    assert_eq!(apps[0].admitted(coupon).await.len(), admitted);
}

/// Every user's application at once, application i to instance i mod 3; their statuses, and how
/// many tokens a bucket of 1/s may have refilled meanwhile: none when all were answered within
/// a second, as they are unless the machine is very busy.
async fn all_at_once(
    apps: &[TestApp; 3],
    coupon: i64,
    users: impl Iterator<Item = i64>,
) -> (Vec<StatusCode>, usize) {
    let started = Instant::now();
    let statuses: Vec<StatusCode> = stream::iter(users.enumerate())
        .map(|(i, user)| async move { apps[i % 3].apply(coupon, user).await.status() })
        .buffer_unordered(64)
        .collect()
        .await;
    let took = started.elapsed();
    (statuses, took.as_secs() as usize)
}

fn count(statuses: &[StatusCode], which: impl Fn(StatusCode) -> bool) -> usize {
    statuses.iter().filter(|s| which(**s)).count()
}
