//! What the fairness log's anonymous readers cost PostgreSQL: one head a second per event, a
//! log's leaves read once, and never a connection the writers need. Judged by the statements on
//! the wire and the connections in PostgreSQL, not by how fast this machine is.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fcfs_coupon::fairness::store::{HEAD_SQL, LEAF_BYTES_SQL};
use fcfs_coupon::startup::LOG_READ_CONNECTIONS;
use reqwest::{header::CACHE_CONTROL, StatusCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    eventually, postgres_address, spawn_app_with, through_proxy, without_tls, TcpProxy, TestApp,
};

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const FOR_A_SECOND: &str = "public, max-age=1";

/// The status and `Cache-Control` of `GET path`.
async fn cached(app: &TestApp, path: &str) -> (StatusCode, String) {
    let resp = app.get(path).await;
    let cache = resp
        .headers()
        .get(CACHE_CONTROL)
        .map(|v| v.to_str().unwrap().to_owned());
    (resp.status(), cache.unwrap_or_default())
}

#[tokio::test]
async fn leaves_and_proofs_of_a_size_reached_are_immutable_and_read_from_postgresql_once() {
    // Arrange: a complete log of 12 leaves, PostgreSQL behind a proxy counting statements.
    let (db, statements) = TcpProxy::start_postgres(postgres_address()).await;
    let app = spawn_app_with(|s| {
        through_proxy(s, db.port);
        without_tls(s);
    })
    .await;
    let (coupon, _) = app.finished_event(12).await;
    let log = |rest: &str| format!("/coupons/{coupon}/log/{rest}");
    let before = statements.executions(LEAF_BYTES_SQL);

    // Act: every range and proof twice, with a head refreshed in between.
    let paths = [
        log("leaves?start=1&end=13"),
        log("leaves?start=4&end=6"),
        log("proof/inclusion?position=5&size=12"),
        log("proof/inclusion?position=1&size=3"),
        log("proof/consistency?from=3&to=12"),
        log("proof/consistency?from=7&to=9"),
    ];
    let mut answers = vec![];
    for round in 0..2 {
        if round == 1 {
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        for path in &paths {
            answers.push((path, cached(&app, path).await));
        }
    }
    let past_the_end = cached(&app, &log("leaves?start=10&end=20")).await;
    let checkpoint = cached(&app, &log("checkpoint")).await;

    // Assert
    for (path, answer) in answers {
        assert_eq!(answer, (StatusCode::OK, IMMUTABLE.to_owned()), "{path}");
    }
    assert_eq!(past_the_end, (StatusCode::OK, FOR_A_SECOND.to_owned()));
    assert_eq!(checkpoint, (StatusCode::OK, FOR_A_SECOND.to_owned()));
    assert_eq!(statements.unreadable(), 0);
    assert_eq!(
        statements.executions(LEAF_BYTES_SQL) - before,
        1,
        "the log's leaves were read more than once"
    );
}

#[tokio::test]
async fn a_crowd_reading_the_checkpoint_costs_one_head_query_a_second() {
    // Arrange
    let (db, statements) = TcpProxy::start_postgres(postgres_address()).await;
    let app = spawn_app_with(|s| {
        through_proxy(s, db.port);
        without_tls(s);
    })
    .await;
    let (coupon, _) = app.finished_event(5).await;
    let url = app.url(&format!("/coupons/{coupon}/log/checkpoint"));
    // Waiting for the log read its head; past that copy's age, the crowd's first read loads one.
    tokio::time::sleep(fcfs_coupon::api::FRESH_FOR).await;
    let before = statements.executions(HEAD_SQL);

    // Act: 64 clients read the checkpoint until 2000 reads were served.
    let started = Instant::now();
    let served = Arc::new(AtomicU32::new(0));
    let crowd: Vec<_> = (0..64)
        .map(|_| {
            let (client, url, served) = (app.client.clone(), url.clone(), served.clone());
            tokio::spawn(async move {
                while served.load(Ordering::Relaxed) < 2000 {
                    let resp = client.get(&url).send().await.unwrap();
                    assert_eq!(resp.status(), StatusCode::OK);
                    assert_eq!(resp.headers()[CACHE_CONTROL], FOR_A_SECOND);
                    served.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for reader in crowd {
        reader.await.unwrap();
    }
    let elapsed = started.elapsed();
    let queries = statements.executions(HEAD_SQL) - before;

    // Assert: over T seconds a copy refreshed at most once a second reads at most ⌊T⌋ + 1
    // heads; a slow machine only makes T, and the allowance, larger.
    eprintln!("FIGURE checkpoint crowd: 2000 reads in {elapsed:.2?}, {queries} head queries");
    assert_eq!(statements.unreadable(), 0);
    assert!(queries >= 1, "the proxy never saw the head's statement");
    let bound = elapsed.as_secs() + u64::from(elapsed.subsec_nanos() > 0) + 1;
    assert!(queries <= bound, "{queries} head queries in {elapsed:.2?}");
}

/// Backends of the app's database waiting on a lock in one of the log readers' statements.
async fn stuck_readers(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND wait_event_type = 'Lock' AND query IN ($1, $2)",
    )
    .bind(HEAD_SQL)
    .bind(LEAF_BYTES_SQL)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn log_readers_stuck_in_postgresql_never_hold_a_connection_post_coupons_needs() {
    // Arrange: a complete log, then its tables locked, so every reader that reaches
    // PostgreSQL stays there (until its statement times out) holding its connection.
    let app = spawn_app_with(|_| {}).await;
    let (coupon, _) = app.finished_event(8).await;
    let mut lock = app.db.begin().await.unwrap();
    sqlx::query("LOCK TABLE fairness_log, fairness_leaf IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();

    // Act: 500 readers: the checkpoint of made-up events (a head query each), of the real one,
    // its leaves and proofs, distinct and identical; meanwhile 10 events are created.
    let stop = CancellationToken::new();
    let readers: Vec<_> = (0..500u32)
        .map(|i| {
            let (client, base, stop) = (app.client.clone(), app.url(""), stop.clone());
            tokio::spawn(async move {
                let mut told = vec![];
                for round in 0u32.. {
                    let path = match i % 4 {
                        0 => format!("/coupons/{}/log/checkpoint", 900_000 + i * 1_000 + round),
                        1 => format!("/coupons/{coupon}/log/checkpoint"),
                        2 => format!("/coupons/{coupon}/log/leaves?start={}&end=9", i % 8 + 1),
                        _ => format!("/coupons/{coupon}/log/proof/inclusion?position=3&size=8"),
                    };
                    let resp = client.get(format!("{base}{path}")).send().await.unwrap();
                    let retry = resp.headers().contains_key("retry-after");
                    told.push((resp.status(), retry, resp.json::<Value>().await.ok()));
                    if stop.is_cancelled() {
                        return told;
                    }
                }
                unreachable!()
            })
        })
        .collect();
    eventually(
        "readers stuck in PostgreSQL",
        Duration::from_secs(30),
        || async { (stuck_readers(&app).await >= 1).then_some(()) },
    )
    .await;
    let mut created = vec![];
    let mut most_stuck = 0;
    for _ in 0..10 {
        most_stuck = most_stuck.max(stuck_readers(&app).await);
        let started = Instant::now();
        let resp = app
            .post_coupon(
                Some(&app.admin_token()),
                &serde_json::json!({"name": "Beside the readers", "stock": 5}),
            )
            .await;
        created.push((resp.status(), started.elapsed()));
    }
    stop.cancel();
    lock.rollback().await.unwrap();
    let mut told = vec![];
    for reader in readers {
        told.extend(reader.await.unwrap());
    }

    // Assert: the writer never waited; the readers held at most their pool's connections and
    // were told 200, 404 (no such event) or 503 with Retry-After, never anything internal.
    eprintln!(
        "FIGURE stuck readers: {} answers, at most {most_stuck} stuck, POSTs {created:?}",
        told.len()
    );
    for (status, took) in &created {
        assert_eq!(*status, StatusCode::CREATED);
        assert!(
            *took < Duration::from_secs(1),
            "POST /coupons took {took:?}"
        );
    }
    assert!(most_stuck >= 1);
    assert!(
        most_stuck <= i64::from(LOG_READ_CONNECTIONS),
        "{most_stuck} readers held connections"
    );
    for (status, retry, body) in &told {
        match *status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => assert_eq!(body.as_ref().unwrap()["code"], "COUPON_NOT_FOUND"),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(retry);
                assert_eq!(body.as_ref().unwrap()["code"], "UNAVAILABLE");
            }
            other => panic!("a reader was told {other}: {body:?}"),
        }
    }
}
