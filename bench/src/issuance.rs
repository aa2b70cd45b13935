//! How fast the pipeline drains a sold-out event: admits N winners through the gate (64 at a
//! time), then measures the time from the last admission to the last persisted row, and the
//! consumer's rows per second. Runs the real service (issuer + consumer) in-process against the
//! local Redis, PostgreSQL and Kafka broker, on its own database, prefix and topic.
//!
//!     cargo run --release -p fcfs-bench -- issuance [--winners 10000]

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

pub async fn run(winners: u32) -> anyhow::Result<()> {
    let id = format!("bench{}", std::process::id());
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

    let started = Instant::now();
    let admitted = stream::iter(1..=i64::from(winners))
        .map(|u| admit(&gate, coupon.id, u))
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let last_admission = Utc::now();
    let admit_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(admitted.iter().all(|ok| *ok), "not every user was admitted");

    let deadline = Instant::now() + Duration::from_secs(120);
    let (count, first, last) = loop {
        let (count, first, last): (i64, Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
            sqlx::query_as("SELECT count(*), min(issued_at), max(issued_at) FROM coupon_issue WHERE coupon_id = $1")
                .bind(coupon.id.get())
                .fetch_one(&db)
                .await?;
        if count == i64::from(winners) {
            break (count, first.context("no rows")?, last.context("no rows")?);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {count} of {winners} rows after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let drain = (last - last_admission).num_milliseconds();
    let consume_ms = (last - first).num_milliseconds().max(1);
    println!("winners:                           {count}");
    println!(
        "admission (gate, 64 in flight):    {admit_secs:.2} s ({:.0} admissions/s)",
        f64::from(winners) / admit_secs
    );
    println!("last admission → last row:         {drain} ms");
    println!(
        "first row → last row:              {consume_ms} ms ({:.0} rows/s persisted)",
        count as f64 * 1000.0 / consume_ms as f64
    );

    shutdown.cancel();
    service.await??;
    db.close().await;
    Ok(())
}

async fn admit(gate: &Gate, coupon: CouponId, user: i64) -> bool {
    matches!(
        gate.apply(coupon, UserId::new(user).unwrap()).await,
        Ok(Admission::Admitted { .. })
    )
}
