//! Redis Cluster of the test's own: a master SIGKILLed mid-spike is followed to its promoted
//! replica without a restart, and scripts a shard forgot are loaded again.

use std::time::{Duration, Instant};

use fcfs_coupon::configuration::RedisMode;
use reqwest::StatusCode;

use crate::helpers::{
    assert_every_ticket_kept, assert_final, assert_told_is_persisted, eventually, spawn_app_with,
    until_admitted, PrivateCluster, TestApp,
};

/// The service on `cluster`, admissions confirmed by one replica.
async fn app_on(cluster: &PrivateCluster) -> TestApp {
    spawn_app_with(|s| {
        s.redis.mode = RedisMode::Cluster;
        s.redis.nodes = cluster.seeds();
        s.redis.ack_replicas = 1;
        s.redis.ack_timeout_ms = 500;
        s.issuer.lease_ms = 3_000;
        s.rate_limit.per_user_per_sec = 0;
    })
    .await
}

/// The slot of `key` (CLUSTER KEYSLOT).
async fn slot_of(cluster: &PrivateCluster, key: &str) -> u16 {
    let mut conn = cluster.nodes[0].connection().await;
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_master_killed_mid_spike_is_followed_and_loses_no_acknowledged_winner() {
    // Arrange: the event's master and its two replicas (with one, the promoted replica would
    // have none left to confirm writes to).
    let mut cluster = PrivateCluster::start(2).await;
    let app = app_on(&cluster).await;
    let coupon = app.create_stock(300).await;
    let queue = app.keys(coupon).queue;
    let slot = slot_of(&cluster, &queue).await;
    let old_master = cluster.master_of(slot).await;
    let replicas = cluster.replicas_of(old_master).await;
    assert_eq!(replicas.len(), 2);
    let master = cluster.node(old_master).connection().await;

    // Act: 1,000 applicants over five seconds, each asking again through 503s. Once 100 are
    // admitted, the replicas are stopped and the master drops their links (what it already
    // sent waits in their sockets; nothing after reaches them). Once the master holds 20
    // admissions they have not, it is SIGKILLed and the replicas resumed: one takes over
    // without those 20.
    let fail_over = async {
        let before = until_admitted(&master, &queue, 100).await;
        for replica in &replicas {
            cluster.node(*replica).pause();
        }
        let _: () = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("replica")
            .query_async(&mut master.clone())
            .await
            .unwrap();
        until_admitted(&master, &queue, before + 20).await;
        cluster.node(old_master).kill().await;
        for replica in &replicas {
            cluster.node(*replica).resume();
        }
        Instant::now()
    };
    let crowd = app.patient_crowd(coupon, 1000, Duration::from_secs(5));
    let (outcomes, killed) = tokio::join!(crowd, fail_over);

    // Assert: a replica took the slot, the failover was met as 503s, never a 500; every user
    // told a place has exactly that row; the stock is exactly spent.
    let promoted = cluster.master_of(slot).await;
    assert!(replicas.contains(&promoted), "a replica was promoted");
    assert_every_ticket_kept(&app, coupon, &outcomes, killed, 300, "cluster").await;
}

#[tokio::test]
async fn an_event_moved_to_another_master_mid_spike_is_followed_without_a_restart() {
    // Arrange
    let cluster = PrivateCluster::start(1).await;
    let app = app_on(&cluster).await;
    let coupon = app.create_stock(200).await;
    let queue = app.keys(coupon).queue;
    let slot = slot_of(&cluster, &queue).await;
    let old_master = cluster.master_of(slot).await;
    let new_master = cluster
        .topology()
        .await
        .into_iter()
        .find(|n| n.master && n.port != old_master)
        .unwrap()
        .port;

    // Act: 600 applicants over three seconds; once 50 are admitted, the event's slot moves to
    // another master (ASK while its keys move, MOVED after).
    let crowd = app.patient_crowd(coupon, 600, Duration::from_secs(3));
    let reshard = async {
        eventually("50 admitted", Duration::from_secs(30), || async {
            (app.admitted(coupon).await.len() >= 50).then_some(())
        })
        .await;
        cluster.move_slot(slot, new_master).await;
    };
    let (outcomes, ()) = tokio::join!(crowd, reshard);

    // Assert: the new master serves the event; every answer was final, the stock exactly spent.
    assert_eq!(cluster.master_of(slot).await, new_master);
    assert_final(&outcomes);
    assert_told_is_persisted(&app, coupon, &outcomes, 200).await;
}

#[tokio::test]
async fn scripts_every_master_forgot_are_loaded_again() {
    let cluster = PrivateCluster::start(1).await;
    let app = app_on(&cluster).await;
    let coupon = app.create_stock(5).await;
    assert_eq!(app.apply(coupon, 1).await.status(), StatusCode::ACCEPTED);

    for node in &cluster.nodes {
        node.flush_scripts().await;
    }

    assert_eq!(app.apply(coupon, 2).await.status(), StatusCode::ACCEPTED);
    assert_eq!(app.admitted(coupon).await, [1, 2]);
}
