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
use std::sync::Arc;

use fcfs_coupon::domain::{CouponId, CouponName, EventWindow, Position, Stock, UserId, Winner};
use fcfs_coupon::fairness::{LogBuilder, LogKey};
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
    /// With the log on: last row → every leaf appended, in ms.
    log_after_ms: Option<i64>,
}

pub async fn run(winners: u32, rounds: u32) -> anyhow::Result<()> {
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Each order in turn, so a machine getting busier or quieter favours neither.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for fairness in order {
            let r = run_once(winners, fairness, round).await?;
            println!(
                "round {round}, log {}: last admission → last row {} ms, {:.0} rows/s{}",
                if fairness { "on " } else { "off" },
                r.drain_ms,
                r.rows_per_sec,
                r.log_after_ms.map_or(String::new(), |after| format!(
                    "; every leaf appended {after} ms after the last row"
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
    let (rows_off, rows_on) = (
        median(&off, |r| r.rows_per_sec),
        median(&on, |r| r.rows_per_sec),
    );
    println!(
        "rows/s persisted, median, log off / on:     {rows_off:.0} / {rows_on:.0} ({:.2})",
        rows_on / rows_off.max(1.0)
    );
    println!(
        "every leaf appended after the last row:     {:.0} ms (median)",
        median(&on, |r| r.log_after_ms.unwrap_or_default() as f64),
    );
    let (per_sec, bytes) = builder_alone(winners * 5).await?;
    println!(
        "log builder alone, {} rows waiting:       {per_sec:.0} leaves/s, {bytes:.0} bytes/leaf in PostgreSQL",
        winners * 5
    );
    Ok(())
}

/// The builder on a backlog: `rows` persisted rows and an empty log, one `build_once` timed;
/// then the log's tables' size per leaf.
async fn builder_alone(rows: u32) -> anyhow::Result<(f64, f64)> {
    let settings = settings_for(&format!("bench{}alone", std::process::id()))?;
    settings.database.create_if_missing().await?;
    let db = settings.database.pool().await?;
    fcfs_coupon::store::migrate(&db).await?;
    let mut tx = db.begin().await?;
    let coupon = insert_coupon(&mut tx, event(rows)?).await?;
    tx.commit().await?;
    let start = Utc::now();
    for chunk in (1..=rows).collect::<Vec<_>>().chunks(5_000) {
        let winners: Vec<Winner> = chunk
            .iter()
            .map(|&p| Winner {
                coupon: coupon.id,
                user: UserId::new(i64::from(p)).unwrap(),
                position: Position::new(p).unwrap(),
                applied_at: start + chrono::Duration::microseconds(i64::from(p)),
            })
            .collect();
        fcfs_coupon::store::persist_batch(&db, &winners).await?;
    }
    let builder = LogBuilder::new(
        db.clone(),
        settings.redis.gate()?,
        Arc::new(LogKey::development()),
        Duration::from_secs(1),
    );
    let started = Instant::now();
    let appended = builder.build_once().await?;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(appended == u64::from(rows), "{appended} of {rows} leaves");
    let bytes: i64 = sqlx::query_scalar(
        "SELECT (pg_total_relation_size('fairness_leaf') + pg_total_relation_size('fairness_log'))::bigint",
    )
    .fetch_one(&db)
    .await?;
    db.close().await;
    Ok((f64::from(rows) / secs, bytes as f64 / f64::from(rows)))
}

/// A bench event of `stock` coupons, open now.
fn event(stock: u32) -> anyhow::Result<NewCoupon> {
    Ok(NewCoupon {
        name: CouponName::new("bench")?,
        stock: Stock::new(stock.into())?,
        window: EventWindow::default(),
        batch_window_us: 0,
        rehearsal: false,
    })
}

/// The service's settings on a database, prefix and topic of their own.
fn settings_for(id: &str) -> anyhow::Result<Settings> {
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
    // In-process: no ops port a running service could already hold.
    settings.ops.addr = "127.0.0.1:0".into();
    Ok(settings)
}

async fn run_once(winners: u32, fairness: bool, round: u32) -> anyhow::Result<Round> {
    let mut settings = settings_for(&format!(
        "bench{}r{round}{}",
        std::process::id(),
        u8::from(fairness)
    ))?;
    settings.fairness.enabled = fairness;

    settings.database.create_if_missing().await?;
    let app = Application::build(&settings, &[Role::Issuer, Role::Consumer]).await?;
    let shutdown = CancellationToken::new();
    let service = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let db = settings.database.pool().await?;
    let gate = settings.redis.gate()?;

    let mut tx = db.begin().await?;
    let coupon = insert_coupon(&mut tx, event(winners)?).await?;
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
    let log_after_ms = if fairness {
        until(winners, "leaves", || {
            sqlx::query_as(
                "SELECT count(*), min(appended_at), max(appended_at) FROM fairness_leaf WHERE coupon_id = $1",
            )
            .bind(coupon.id.get())
            .fetch_one(&db)
        })
        .await?;
        Some((Utc::now() - last).num_milliseconds())
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
        log_after_ms,
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
