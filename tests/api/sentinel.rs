//! Redis Sentinel: the service finds the master through the sentinels and follows a failover
//! without a restart; with `APP_REDIS__ACK_REPLICAS=1`, every acknowledged winner survives it.

use std::time::{Duration, Instant};

use fcfs_coupon::configuration::RedisMode;

use crate::helpers::{assert_every_ticket_kept, spawn_app_with, until_admitted, SentinelSet};

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
    let kill = async {
        let before = until_admitted(&master, &queue, 100).await;
        set.replication().hold();
        until_admitted(&master, &queue, before + 20).await;
        set.master.kill().await;
        Instant::now()
    };
    let crowd = app.patient_crowd(coupon, 1000, Duration::from_secs(5));
    let (outcomes, killed) = tokio::join!(crowd, kill);

    // Assert: a failover happened and was met as 503s, never as a 500; every user told a
    // place has exactly that row; the stock is exactly spent.
    assert_ne!(
        set.master_port().await,
        old_master,
        "the sentinels promoted a replica"
    );
    assert_every_ticket_kept(&app, coupon, &outcomes, killed, 300, "sentinel").await;
}
