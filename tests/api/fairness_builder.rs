//! The log builder on its own, run by hand: leaves are appended strictly in position order
//! whatever order the rows arrive in, and a place no row will ever fill (a FAILED winner, a
//! winner Redis lost) gets its leaf, marked, instead of stopping the log.

use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use fcfs_coupon::domain::{CouponId, Position, UserId, Winner};
use fcfs_coupon::fairness::{
    open_checkpoint, store, Leaf, LeafKind, LogBuilder, LogKey, MemoryTree,
};
use reqwest::StatusCode;

use crate::helpers::{spawn_app_with, TestApp, MANUAL};

impl TestApp {
    /// Writes the rows of the winners at `positions` as the consumer would, in that order.
    async fn persist(&self, coupon: i64, queue: &[(i64, f64)], positions: &[usize]) {
        let winners: Vec<Winner> = positions
            .iter()
            .map(|&p| Winner {
                coupon: CouponId::new(coupon).unwrap(),
                user: UserId::new(queue[p - 1].0).unwrap(),
                position: Position::new(p as u32).unwrap(),
                applied_at: DateTime::from_timestamp_micros(queue[p - 1].1 as i64).unwrap(),
            })
            .collect();
        fcfs_coupon::store::persist_batch(&self.db, &winners)
            .await
            .unwrap();
    }

    async fn log_kinds(&self, coupon: i64) -> Vec<LeafKind> {
        let id = CouponId::new(coupon).unwrap();
        store::leaves(&self.db, id, 1, u32::MAX)
            .await
            .unwrap()
            .iter()
            .map(|l| Leaf::from_bytes(&l.leaf).unwrap().kind)
            .collect()
    }
}

#[tokio::test]
async fn leaves_wait_for_their_place_and_places_no_row_will_fill_are_marked() {
    // Arrange: five winners admitted, none published (the issuer never ticks); this test's
    // builder is the only one (the service's own log is off).
    let app = spawn_app_with(|s| {
        s.issuer.schedule = MANUAL.into();
        s.fairness.enabled = false;
    })
    .await;
    let coupon = app.create_stock(5).await;
    for user in 1..=5 {
        assert_eq!(app.apply(coupon, user).await.status(), StatusCode::ACCEPTED);
    }
    let queue = app.queue(coupon).await;
    let key = Arc::new(LogKey::development());
    let builder = LogBuilder::new(
        app.db.clone(),
        app.gate.clone(),
        key.clone(),
        Duration::from_secs(1),
    );
    let id = CouponId::new(coupon).unwrap();
    let mut redis = app.redis.clone();

    // Act 1: rows for 1, 3 and 5 arrive (a redelivery out of order); 2 and 4 are on their way.
    app.persist(coupon, &queue, &[3, 5, 1]).await;
    let first = builder.build_once().await.unwrap();
    let after_rows = app.log_kinds(coupon).await;

    // Act 2: 2's coupon cannot be recorded (FAILED); 4 was lost with Redis' memory (its
    // placeholder keeps the place and the score).
    let keys = app.keys(coupon);
    let _: () = redis::cmd("HSET")
        .arg(&keys.status)
        .arg(queue[1].0)
        .arg("FAILED")
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::pipe()
        .atomic()
        .cmd("ZREM")
        .arg(&keys.queue)
        .arg(queue[3].0)
        .ignore()
        .cmd("ZADD")
        .arg(&keys.queue)
        .arg(queue[3].1)
        .arg("~lost:0000000004")
        .ignore()
        .query_async(&mut redis)
        .await
        .unwrap();
    let second = builder.build_once().await.unwrap();
    let again = builder.build_once().await.unwrap();

    // Assert: position 1 alone first; then every place, in order, marked; the log complete
    // (sold out, 5 places, 5 leaves) and its signed root the leaves' root.
    assert_eq!((first, after_rows), (1, vec![LeafKind::Issued]));
    assert_eq!(second, 4);
    assert_eq!(again, 0, "a complete log is left alone");
    use LeafKind::*;
    assert_eq!(
        app.log_kinds(coupon).await,
        [Issued, Failed, Issued, Lost, Issued]
    );
    let head = store::head(&app.db, id).await.unwrap().unwrap();
    assert!(head.complete);
    let checkpoint = open_checkpoint(&head.checkpoint.unwrap(), key.verifier_key(), id).unwrap();
    let mut tree = MemoryTree::default();
    let leaves = store::leaves(&app.db, id, 1, 6).await.unwrap();
    for (i, stored) in leaves.iter().enumerate() {
        let leaf = Leaf::from_bytes(&stored.leaf).unwrap();
        assert_eq!(leaf.position.get() as usize, i + 1);
        assert_eq!(
            leaf.arrived_us, queue[i].1 as i64,
            "arrival is the gate's score"
        );
        assert_eq!(
            stored.nonce.is_none(),
            leaf.kind == Lost,
            "only a lost place has no one to open it"
        );
        tree.push(leaf.hash()).unwrap();
    }
    assert_eq!(
        (checkpoint.size(), *checkpoint.hash()),
        (5, tree.root().unwrap())
    );
}
