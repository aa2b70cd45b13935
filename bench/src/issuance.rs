//! How fast the pipeline drains a sold-out event, with the fairness log off and on in
//! alternating rounds: admits N winners through the gate (64 at a time), then measures the time
//! from the last admission to the last persisted row, and the consumer's rows per second; with
//! the log on, also how long after the last row the log is complete, the leaves per second its
//! builder appended, and the bytes the log takes per leaf in PostgreSQL. Each round runs the real
//! service (issuer + consumer) in-process against the local Redis, PostgreSQL and Kafka broker,
//! on a database, prefix and topic of its own.
//!
//!     cargo run --release -p fcfs-bench -- issuance [--winners 10000] [--rounds 2]

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use fcfs_coupon::configuration::Settings;
use fcfs_coupon::domain::{CouponId, CouponName, EventWindow, Stock, UserId};
use fcfs_coupon::gate::{Admission, Gate};
use fcfs_coupon::startup::{Application, Role};
use fcfs_coupon::store::{insert_coupon, NewCoupon};
use futures::{stream, StreamExt};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

/// One round's figures.
#[derive(Debug, Clone, Copy)]
struct Round {
    drain_ms: i64,
    rows_per_sec: f64,
    /// With the log on: (last row → log complete in ms, leaves/s appended, bytes per leaf).
    log: Option<(i64, f64, f64)>,
}

pub async fn run(winners: u32, rounds: u32) -> anyhow::Result<()> {
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for fairness in [false, true] {
            let r = run_once(winners, fairness, round).await?;
            println!(
                "round {round}, log {}: last admission → last row {} ms, {:.0} rows/s{}",
                if fairness { "on " } else { "off" },
                r.drain_ms,
                r.rows_per_sec,
                r.log.map_or(String::new(), |(after, per_sec, bytes)| format!(
                    "; log complete {after} ms after the last row, {per_sec:.0} leaves/s, {bytes:.0} bytes/leaf"
                )),
            );
            if fairness { &mut on } else { &mut off }.push(r);
        }
    }
    let median = |rounds: &[Round], f: fn(&Round) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (drain_off, drain_on) = (
        median(&off, |r| r.drain_ms as f64),
        median(&on, |r| r.drain_ms as f64),
    );
    println!("winners:                                    {winners}");
    println!("drain, median, log off / on:                {drain_off:.0} ms / {drain_on:.0} ms");
    println!(
        "drain with the log ÷ without:               {:.2}",
        drain_on / drain_off.max(1.0)
    );
    println!(
        "log builder, median:                        {:.0} leaves/s, complete {:.0} ms after the last row, {:.0} bytes/leaf",
        median(&on, |r| r.log.map_or(0.0, |l| l.1)),
        median(&on, |r| r.log.map_or(0.0, |l| l.0 as f64)),
        median(&on, |r| r.log.map_or(0.0, |l| l.2)),
    );
    Ok(())
}

async fn run_once(winners: u32, fairness: bool, round: u32) -> anyhow::Result<Round> {
    let id = format!("bench{}r{round}{}", std::process::id(), u8::from(fairness));
    let mut settings = Settings::load(None)?;
    let base = settings.database.url.expose_secret().to_owned();
    let server = base
        .rsplit_once('/')
        .map_or(base.as_str(), |(s, _)| s)
        .to_owned();
    settings.database.url = format!("{server}/fcfs_test_{id}").into();
    settings.redis.key_prefix = format!("test-{id}");
    settings.kafka.topic = format!("test-{id}");
    settings.kafka.group_id = format!("test-{id}");
    settings.fairness.enabled = fairness;
    // In-process: no ops port a running service could already hold.
    settings.ops.addr = "127.0.0.1:0".into();

    settings.database.create_if_missing().await?;
    let app = Application::build(&settings, &[Role::Issuer, Role::Consumer]).await?;
    let shutdown = CancellationToken::new();
    let service = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let db = settings.database.pool().await?;
    let gate = settings.redis.gate()?;

    let mut tx = db.begin().await?;
    let coupon = insert_coupon(
        &mut tx,
        NewCoupon {
            name: CouponName::new("bench")?,
            stock: Stock::new(winners.into())?,
            window: EventWindow::default(),
        },
    )
    .await?;
    let hold = gate.register(&coupon).await?;
    tx.commit().await?;
    gate.open(coupon.id, &hold).await?;

    let admitted = stream::iter(1..=i64::from(winners))
        .map(|u| admit(&gate, coupon.id, u))
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let last_admission = Utc::now();
    anyhow::ensure!(admitted.iter().all(|ok| *ok), "not every user was admitted");

    let (first, last) = until(winners, "rows", || {
        sqlx::query_as(
            "SELECT count(*), min(issued_at), max(issued_at) FROM coupon_issue WHERE coupon_id = $1",
        )
        .bind(coupon.id.get())
        .fetch_one(&db)
    })
    .await?;
    let log = if fairness {
        let (first_leaf, last_leaf) = until(winners, "leaves", || {
            sqlx::query_as(
                "SELECT count(*), min(appended_at), max(appended_at) FROM fairness_leaf WHERE coupon_id = $1",
            )
            .bind(coupon.id.get())
            .fetch_one(&db)
        })
        .await?;
        let appending_ms = (last_leaf - first_leaf).num_milliseconds().max(1);
        let bytes: i64 = sqlx::query_scalar(
            "SELECT (pg_total_relation_size('fairness_leaf') + pg_total_relation_size('fairness_hash') \
             + pg_total_relation_size('fairness_log'))::bigint",
        )
        .fetch_one(&db)
        .await?;
        Some((
            (last_leaf - last).num_milliseconds(),
            f64::from(winners) * 1000.0 / appending_ms as f64,
            bytes as f64 / f64::from(winners),
        ))
    } else {
        None
    };
    let consume_ms = (last - first).num_milliseconds().max(1);

    shutdown.cancel();
    service.await??;
    db.close().await;
    Ok(Round {
        drain_ms: (last - last_admission).num_milliseconds(),
        rows_per_sec: f64::from(winners) * 1000.0 / consume_ms as f64,
        log,
    })
}

type Span = (i64, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// Polls `count` until it reaches `winners` (two minutes at most); the first and last times.
async fn until<F, Fut>(
    winners: u32,
    what: &str,
    count: F,
) -> anyhow::Result<(DateTime<Utc>, DateTime<Utc>)>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = sqlx::Result<Span>>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (n, first, last) = count().await?;
        if n == i64::from(winners) {
            return Ok((first.context("none")?, last.context("none")?));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {n} of {winners} {what} after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn admit(gate: &Gate, coupon: CouponId, user: i64) -> bool {
    matches!(
        gate.apply(coupon, UserId::new(user).unwrap()).await,
        Ok(Admission::Admitted { .. })
    )
}
