//! `fcfs-bench crowd`: the crowd at the door. Phase A, the applications alone: an event of
//! `--stock`, `--concurrency` connections applying with `--users` distinct tokens for
//! `--duration` seconds (or until the users run out). Phase B, the crowd: a fresh event of the
//! same size, the same appliers, plus `--readers` connections refreshing `GET /coupons/{id}`
//! and `--pollers` connections polling `GET /coupons/{id}/position` with the tokens of users who
//! applied, all for the same time. Each phase's winners are persisted before the next begins.
//! Then, with the service at rest, Redis commands per request (`INFO commandstats`): an idle
//! phase for the background, readers alone on the sold-out event and on a fresh open event,
//! and pollers alone (hammering) on the sold-out event.

mod commands;
mod report;
mod visitors;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use fcfs_coupon::configuration::Settings;
use fcfs_coupon::domain::CouponId;
use tokio_util::sync::CancellationToken;

use crate::spike::crowd::{self, Progress};
use crate::spike::{drop, DropOptions};
use commands::Counter;
pub use report::CrowdReport;
use report::{Phase, RedisCosts, Route};
pub use visitors::PollMode;
use visitors::{Applicants, Count};

#[derive(Debug, Clone, clap::Args)]
#[command(
    args_override_self = true,
    mut_arg("users", |a| a.default_value("200000")),
    mut_arg("out", |a| a.default_value("bench-results/crowd"))
)]
pub struct CrowdOptions {
    #[command(flatten)]
    pub drop: DropOptions,
    /// Connections refreshing the event page (`GET /coupons/{id}`, no token) in phase B.
    #[arg(long, default_value_t = 64)]
    pub readers: usize,
    /// Connections polling `GET /coupons/{id}/position` with applicants' tokens in phase B.
    #[arg(long, default_value_t = 64)]
    pub pollers: usize,
    /// How pollers behave in phase B (the commands-per-poll phase always hammers).
    #[arg(long, value_enum, default_value_t = PollMode::Hammer)]
    pub poll: PollMode,
    /// Seconds each of phases A and B lasts (A ends sooner if the users run out).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of each Redis-commands phase (idle, reads, polls).
    #[arg(long, default_value_t = 2.0)]
    pub cost_secs: f64,
}

/// What every phase uses.
struct Kit {
    client: reqwest::Client,
    db: sqlx::PgPool,
    admin: String,
    tokens: Arc<Vec<String>>,
}

pub async fn run(settings: &Settings, opts: &CrowdOptions) -> anyhow::Result<CrowdReport> {
    opts.drop.check()?;
    let tokens = opts.drop.tokens(settings)?;
    let kit = Kit {
        client: drop::client(opts.drop.concurrency + opts.readers + opts.pollers)?,
        db: settings.database.pool().await?,
        admin: tokens.admin,
        tokens: Arc::new(tokens.users),
    };
    let (stock, d) = (opts.drop.stock, &opts.drop);
    eprintln!(
        "crowd: phase A, {} appliers alone for {} s ({} users, stock {})",
        d.concurrency, opts.duration, d.users, d.stock
    );
    let events_a = d.create_events(&kit.client, &kit.admin).await?;
    let alone = phase(&kit, opts, &events_a, false).await?;
    drop::wait_for_rows(&kit.db, &events_a, stock).await?;
    eprintln!(
        "crowd: phase B, the same with {} readers and {} pollers ({:?})",
        opts.readers, opts.pollers, opts.poll
    );
    let events_b = d.create_events(&kit.client, &kit.admin).await?;
    let crowd = phase(&kit, opts, &events_b, true).await?;
    drop::wait_for_rows(&kit.db, &events_b, stock).await?;
    let all: Vec<CouponId> = events_a.iter().chain(&events_b).copied().collect();
    let verification = drop::verify(&kit.db, &all, stock).await?;
    eprintln!("crowd: Redis commands per request, at rest");
    let applied = (crowd.apply.served + crowd.apply.other) as usize;
    let redis = match Counter::connect(&settings.redis).await? {
        Some(counter) => Some(costs(&kit, opts, (&events_b, applied), counter).await?),
        None => None,
    };
    let apply_alone = alone.apply.served_per_sec.max(1e-9);
    let mut report = CrowdReport {
        users: d.users,
        stock,
        events: events_a.len() as u32,
        redis_mode: format!("{:?}", settings.redis.mode).to_lowercase(),
        concurrency: d.concurrency,
        readers: opts.readers,
        pollers: opts.pollers,
        poll_mode: opts.poll,
        duration_secs: opts.duration,
        apply_ratio: crowd.apply.served_per_sec / apply_alone,
        served_ratio: crowd.served_per_sec / apply_alone,
        alone,
        crowd,
        redis,
        verification,
        targets: Vec::new(),
    };
    report.targets();
    std::fs::create_dir_all(&d.out).with_context(|| format!("creating {}", d.out.display()))?;
    std::fs::write(
        d.out.join("report.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    eprintln!("crowd: wrote {}/report.json", d.out.display());
    Ok(report)
}

/// The appliers for `--duration` (or until the users run out), with the readers and pollers
/// when `with_visitors`; everyone stops at the same moment.
async fn phase(
    kit: &Kit,
    opts: &CrowdOptions,
    events: &[CouponId],
    with_visitors: bool,
) -> anyhow::Result<Phase> {
    let base = &opts.drop.url;
    let started = Instant::now();
    let progress = Progress::default();
    let stop = progress.stop.clone();
    let readers =
        with_visitors.then(|| visitors::readers(&kit.client, base, events, opts.readers, &stop));
    let applicants = Applicants {
        urls: Arc::new(urls(base, events, "/position")),
        tokens: kit.tokens.clone(),
        count: Count::Running {
            progress: progress.clone(),
            in_flight: opts.drop.concurrency,
        },
    };
    let pollers = with_visitors
        .then(|| visitors::pollers(&kit.client, applicants, opts.pollers, opts.poll, &stop));
    let timer = tokio::spawn({
        let stop = stop.clone();
        let length = Duration::from_secs_f64(opts.duration);
        async move {
            tokio::select! {
                _ = tokio::time::sleep(length) => stop.cancel(),
                _ = stop.cancelled() => {}
            }
        }
    });
    let samples = crowd::run_until(
        &kit.client,
        reqwest::Method::POST,
        Arc::new(urls(base, events, "/issue")),
        kit.tokens.clone(),
        opts.drop.concurrency,
        started,
        &progress,
    )
    .await;
    // The appliers stop at the deadline, or earlier when the users run out: everyone stops.
    stop.cancel();
    let seconds = started.elapsed().as_secs_f64();
    timer.await?;
    let read = match readers {
        Some(r) => Some(Route::of_tally(&r.await?, seconds)),
        None => None,
    };
    let poll = match pollers {
        Some(p) => Some(Route::of_tally(&p.await?, seconds)),
        None => None,
    };
    let apply = Route::of_applications(&samples, seconds);
    let served = apply.served
        + read.as_ref().map_or(0, |r| r.served)
        + poll.as_ref().map_or(0, |r| r.served);
    eprintln!(
        "crowd: {:.0} applications/s over {seconds:.2} s, {} admitted",
        apply.served_per_sec,
        samples.iter().filter(|s| s.status == 202).count()
    );
    Ok(Phase {
        seconds,
        admitted: samples.iter().filter(|s| s.status == 202).count() as u64,
        apply,
        read,
        poll,
        served_per_sec: served as f64 / seconds,
    })
}

/// Redis commands per request with the service at rest: the background first, then readers
/// alone on the sold-out events and on a fresh open one, then pollers alone, hammering, with
/// the tokens of the users who applied to them (the first `applied`).
async fn costs(
    kit: &Kit,
    opts: &CrowdOptions,
    (sold_out, applied): (&[CouponId], usize),
    mut counter: Counter,
) -> anyhow::Result<RedisCosts> {
    let length = Duration::from_secs_f64(opts.cost_secs);
    let open =
        [drop::create_coupon(&kit.client, &opts.drop.url, opts.drop.stock, &kit.admin).await?];
    // The fresh event's first reads may fill a cache: let them happen before the idle phase.
    let warm = CancellationToken::new();
    let warming = visitors::readers(&kit.client, &opts.drop.url, &open, 1, &warm);
    tokio::time::sleep(Duration::from_millis(100)).await;
    warm.cancel();
    warming.await?;
    let background_per_sec = counter.idle(length).await?;
    let reads = |events: Vec<CouponId>| {
        let client = kit.client.clone();
        let (url, readers) = (opts.drop.url.clone(), opts.readers);
        async move {
            let stop = CancellationToken::new();
            let tally = visitors::readers(&client, &url, &events, readers, &stop);
            tokio::time::sleep(length).await;
            stop.cancel();
            let tally = tally.await?;
            Ok::<_, anyhow::Error>(tally.served + tally.other)
        }
    };
    let mut read_sold_out = None;
    let mut read_open = None;
    if opts.readers > 0 {
        let cost = counter.measure(background_per_sec, reads(sold_out.to_vec()));
        read_sold_out = Some(cost.await?);
        let cost = counter.measure(background_per_sec, reads(open.to_vec()));
        read_open = Some(cost.await?);
    }
    let mut poll_sold_out = None;
    if opts.pollers > 0 {
        let applicants = Applicants {
            urls: Arc::new(urls(&opts.drop.url, sold_out, "/position")),
            tokens: kit.tokens.clone(),
            count: Count::Applied(applied),
        };
        let polls = async {
            let stop = CancellationToken::new();
            let tally = visitors::pollers(
                &kit.client,
                applicants,
                opts.pollers,
                PollMode::Hammer,
                &stop,
            );
            tokio::time::sleep(length).await;
            stop.cancel();
            let tally = tally.await?;
            Ok::<_, anyhow::Error>(tally.served + tally.other)
        };
        poll_sold_out = Some(counter.measure(background_per_sec, polls).await?);
    }
    Ok(RedisCosts {
        background_per_sec,
        pollers_users: applied,
        read_sold_out,
        read_open,
        poll_sold_out,
    })
}

fn urls(base: &str, events: &[CouponId], suffix: &str) -> Vec<String> {
    events
        .iter()
        .map(|c| format!("{base}/coupons/{c}{suffix}"))
        .collect()
}
