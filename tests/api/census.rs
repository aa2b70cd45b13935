//! The census is counted, not scanned (issue 35, item 5): an event of a million winners, built
//! through the real scripts (apply, claim, advance), costs Redis under a millisecond of its own
//! time per census, and the counts it reads equal a full scan of the statuses.

use chrono::Utc;
use fcfs_coupon::domain::{Coupon, CouponId, CouponName, EventWindow, Status, Stock, UserId};
use fcfs_coupon::gate::{Census, Gate};
use redis::aio::MultiplexedConnection;
use std::time::Duration;

use crate::helpers::{counts_unlike_statuses, isolated_settings, PrivateRedis};

const WINNERS: u32 = 1_000_000;
/// Per script call: apply.lua unpacks twice as many values, within Lua's limit of 8,000.
const BATCH: u32 = 2_000;

/// Microseconds Redis has spent running scripts (`INFO commandstats`): Redis' own time, not the
/// machine's wall clock, so a loaded machine does not change the figure much.
async fn script_usec(conn: &mut MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| l.split(',').find_map(|f| f.strip_prefix("usec=")))
        .map(|u| u.parse::<u64>().unwrap())
        .sum()
}

/// An open event of `winners` units, nobody admitted yet.
async fn open_event(gate: &Gate, winners: u32) -> CouponId {
    let coupon = Coupon {
        id: CouponId::new(1).unwrap(),
        name: CouponName::new("census").unwrap(),
        stock: Stock::new(i64::from(winners)).unwrap(),
        window: EventWindow::default(),
        created_at: Utc::now(),
    };
    let hold = gate.register(&coupon).await.unwrap();
    gate.open(coupon.id, &hold).await.unwrap();
    coupon.id
}

/// Sells the event out through the scripts the pipeline runs (apply, claim, advance), every
/// winner issued but the first, which FAILED: an event the watcher never retires and so keeps
/// taking the census of.
async fn sell_out(gate: &Gate, coupon: CouponId, winners: u32) {
    let batch = BATCH.min(winners);
    for first in (1..=winners).step_by(batch as usize) {
        let users: Vec<UserId> = (first..first + batch)
            .map(|u| UserId::new(i64::from(u)).unwrap())
            .collect();
        let answers = gate.apply_batch(coupon, &users).await.unwrap();
        assert!(answers.iter().all(|a| a.is_ok()));
        let claim = gate
            .claim(coupon, batch as usize, Duration::from_secs(600))
            .await
            .unwrap();
        let mut claimed: Vec<UserId> = claim.winners.iter().map(|w| w.user).collect();
        assert_eq!(claimed.len(), batch as usize);
        if first == 1 {
            let failed = claimed.remove(0);
            gate.advance(coupon, Status::Failed, &[failed])
                .await
                .unwrap();
        }
        gate.advance(coupon, Status::Published, &claimed)
            .await
            .unwrap();
        gate.advance(coupon, Status::Issued, &claimed)
            .await
            .unwrap();
    }
}

/// What the census of a sold-out event of `n` winners, one FAILED, reads.
fn sold_out_census(n: u64) -> Option<Census> {
    Some(Census {
        admitted: n,
        lost: 0,
        public_issued: n - 1,
        status_admitted: 0,
        status_published: 0,
        status_issued: n - 1,
        status_failed: 1,
        status_entries: n,
        stranded: 0,
    })
}

#[tokio::test]
async fn a_census_of_a_million_winners_costs_redis_under_a_millisecond() {
    let redis = PrivateRedis::start().await;
    let mut settings = isolated_settings();
    settings.redis.url = redis.url().into();
    let gate = settings.redis.gate().unwrap();
    let coupon = open_event(&gate, WINNERS).await;
    sell_out(&gate, coupon, WINNERS).await;
    // No response timeout: the full scan below takes Redis most of a second.
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new().set_response_timeout(None),
        )
        .await
        .unwrap();

    // Once to load the script, then the census measured.
    gate.census(coupon).await.unwrap();
    let before = script_usec(&mut conn).await;
    let census = gate.census(coupon).await.unwrap();
    let took = script_usec(&mut conn).await - before;

    let n = u64::from(WINNERS);
    assert_eq!(census, sold_out_census(n));
    eprintln!("FIGURE census of {n} winners: {took} µs of Redis' time");
    assert!(took < 1_000, "the census took {took} µs of Redis' time");
    // The counts equal a full scan, which costs what every census used to.
    let before = script_usec(&mut conn).await;
    let miscounted = counts_unlike_statuses(&conn, &gate.keys(coupon)).await;
    let scan = script_usec(&mut conn).await - before;
    eprintln!("FIGURE a full scan of those statuses: {scan} µs of Redis' time");
    assert_eq!(miscounted, Vec::<String>::new());
}

/// An event written before the counts existed (a deploy in its middle) has none: its census
/// scans the statuses, as every census did, and the public issued count still moves.
#[tokio::test]
async fn an_event_written_before_the_counts_is_scanned_and_its_issued_count_moves() {
    let settings = isolated_settings();
    let gate = settings.redis.gate().unwrap();
    let coupon = open_event(&gate, 10).await;
    let meta = gate.keys(coupon).meta;
    let mut conn = settings.redis.connect().await.unwrap();
    let _: () = redis::cmd("HDEL")
        .arg(&meta)
        .arg(&["count:ADMITTED", "count:PUBLISHED", "count:FAILED"])
        .query_async(&mut conn)
        .await
        .unwrap();
    sell_out(&gate, coupon, 10).await;

    assert_eq!(gate.census(coupon).await.unwrap(), sold_out_census(10));
    let counts: Vec<Option<i64>> = redis::cmd("HMGET")
        .arg(&meta)
        .arg(&["count:ADMITTED", "count:PUBLISHED", "count:FAILED"])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(counts, [None, None, None], "no partial counts started");
    gate.unregister(coupon).await.unwrap();
}
