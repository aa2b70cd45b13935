//! Redis Sentinel: the service finds the master through the sentinels and follows a failover
//! without a restart; with `APP_REDIS__ACK_REPLICAS=1`, every acknowledged winner survives it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fcfs_coupon::configuration::RedisMode;
use futures::{stream, StreamExt};
use reqwest::StatusCode;

use crate::helpers::{assert_final, eventually, spawn_app_with, told, Outcome, SentinelSet};

#[tokio::test]
async fn a_master_killed_mid_spike_loses_no_acknowledged_winner() {
    // Arrange: a master, two replicas, three sentinels; admissions confirmed by one replica.
    let mut set = SentinelSet::start().await;
    let app = spawn_app_with(|s| {
        s.redis.mode = RedisMode::Sentinel;
        s.redis.nodes = set.nodes();
        s.redis.ack_replicas = 1;
        s.redis.ack_timeout_ms = 500;
        s.issuer.lease_ms = 3_000;
        s.rate_limit.per_user_per_sec = 0;
    })
    .await;
    let coupon = app.create_stock(300).await;
    let old_master = set.master.port;
    let queue = app.keys(coupon).queue;
    let master = set.master.connection().await;

    // Act: 1,000 applicants arrive over five seconds, each asking again through 503s. Once 100
    // are admitted, replication stalls; once the master holds 20 admissions no replica has, it
    // is SIGKILLed: those 20 die with it.
    let started = Instant::now();
    let gap = Duration::from_secs(5) / 1000;
    let crowd = stream::iter((1..=1000i64).zip(0u32..))
        .map(|(user, i)| {
            let app = &app;
            async move {
                tokio::time::sleep_until((started + gap * i).into()).await;
                app.apply_through_outage(coupon, user, Duration::from_secs(60))
                    .await
            }
        })
        .buffer_unordered(256)
        .collect::<Vec<Outcome>>();
    let admitted = |at_least: u64| {
        let (master, queue) = (master.clone(), queue.clone());
        move || {
            let (mut master, queue) = (master.clone(), queue.clone());
            async move {
                let admitted: u64 = redis::cmd("ZCARD")
                    .arg(queue)
                    .query_async(&mut master)
                    .await
                    .ok()?;
                (admitted >= at_least).then_some(admitted)
            }
        }
    };
    let kill = async {
        let within = Duration::from_secs(30);
        let before = eventually("100 admitted on the master", within, admitted(100)).await;
        set.replication().hold();
        eventually(
            "20 admissions no replica has",
            within,
            admitted(before + 20),
        )
        .await;
        set.master.kill().await;
        Instant::now()
    };
    let (outcomes, killed) = tokio::join!(crowd, kill);

    // Assert: a failover happened and was met as 503s, never as a 500.
    assert_ne!(
        set.master_port().await,
        old_master,
        "the sentinels promoted a replica"
    );
    assert_final(&outcomes);
    let unavailable: u32 = outcomes.iter().map(|o| o.unavailable).sum();
    assert!(unavailable > 0, "nobody met the failover");
    let first_after = outcomes
        .iter()
        .filter(|o| o.status == StatusCode::ACCEPTED && o.asked > killed)
        .map(|o| o.answered - killed)
        .min()
        .expect("admissions continue on the new master");
    eprintln!(
        "FIGURE sentinel: first 202 to an application sent after the SIGKILL: {first_after:.1?} after it ({unavailable} answers were 503)"
    );

    // Every user told a place has exactly that row; the stock is exactly spent.
    let told = told(&outcomes);
    assert_eq!(
        told.len(),
        300,
        "every unit of stock went to someone told so"
    );
    let rows = eventually(
        "every winner persisted",
        Duration::from_secs(60),
        || async {
            let rows = app.issued_rows(coupon).await;
            (rows.len() >= told.len()).then_some(rows)
        },
    )
    .await;
    let persisted: BTreeMap<i64, i32> = rows.into_iter().collect();
    assert_eq!(persisted, told, "rows differ from what clients were told");
    assert_eq!(app.failed_events().await, 0);
}
