//! `fcfs-bench spike`: drives a running service like a real crowd and reports what happened,
//! with the figures that matter for a flash event measured in the same run.

pub mod ceiling;
pub(crate) mod chart;
pub(crate) mod crowd;
pub mod drop;
mod floor;
mod footprint;
mod gate_cost;
pub(crate) mod order;
mod probe;
pub(crate) mod report;
mod sampler;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use fcfs_coupon::configuration::Settings;
use fcfs_coupon::domain::CouponId;
use fcfs_coupon::gate::Gate;
use hdrhistogram::Histogram;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Users the probes ask as, in turn: at 200 a second, each asks once every 10 s (a user's own
/// database reads are limited to 2 a second).
const PROBE_USERS: usize = 2_000;

pub use drop::DropOptions;
pub use report::Report;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    #[command(flatten)]
    pub drop: DropOptions,
    /// Requests per second to the database-backed page `GET /me/coupons` (and to the control):
    /// a spike lasts a few seconds, and a p99 needs a few hundred samples in it.
    #[arg(long, default_value_t = 200)]
    pub probe_rate: u32,
    /// Seconds of probing the page before the spike, for its idle latency.
    #[arg(long, default_value_t = 5.0)]
    pub idle_secs: f64,
    /// The service's process id, to sample its resident memory.
    #[arg(long)]
    pub service_pid: Option<u32>,
    /// The service's ops port, for its admission calls per batch (`fcfs_apply_batch_size`).
    #[arg(long, default_value = "http://127.0.0.1:9100")]
    pub ops_url: String,
    /// Applications per call for the batched script ceilings (no HTTP), beside the single one.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub ceiling_batches: Vec<usize>,
}

pub async fn run(settings: &Settings, opts: &BenchOptions) -> anyhow::Result<Report> {
    let setup = Setup::new(settings, opts).await?;
    let (page_idle, live_idle) = setup.idle_probes(opts).await?;
    let spike = setup.spike(opts).await?;
    let mut report = summarise(&setup, opts, spike, page_idle, live_idle).await?;
    report.targets();
    write(&report, &opts.drop.out)?;
    Ok(report)
}

/// Everything made before the crowd arrives: tokens, the event, the raw ceiling.
struct Setup {
    tokens: Arc<Vec<String>>,
    client: reqwest::Client,
    db: sqlx::PgPool,
    gate: Gate,
    coupons: Vec<CouponId>,
    ceiling: f64,
    batched_ceilings: Vec<ceiling::Batched>,
    redis_mode: String,
    redis: fcfs_coupon::configuration::RedisSettings,
}

/// What the spike left behind, before it is summarised.
struct Spike {
    samples: Vec<crowd::Sample>,
    apply_seconds: f64,
    wall_started: DateTime<Utc>,
    page: Histogram<u64>,
    live: Histogram<u64>,
    last_persisted: Option<DateTime<Utc>>,
    redis_bytes_per_winner: f64,
    progress: Vec<sampler::Progress>,
    rates: floor::Rates,
    gate_cost: gate_cost::GateCost,
}

impl Setup {
    async fn new(settings: &Settings, opts: &BenchOptions) -> anyhow::Result<Self> {
        opts.drop.check()?;
        let tokens = opts.drop.tokens(settings)?;
        let client = drop::client(opts.drop.concurrency)?;
        let db = settings.database.pool().await?;
        let gate = settings.redis.gate()?;
        let coupons = opts.drop.create_events(&client, &tokens.admin).await?;
        eprintln!(
            "bench: {} event(s) of stock {}, {} users, {} connections, Redis {:?}",
            coupons.len(),
            opts.drop.stock,
            opts.drop.users,
            opts.drop.concurrency,
            settings.redis.mode
        );
        let ceiling = ceiling::measure(
            &settings.redis,
            opts.drop.users,
            opts.drop.stock,
            opts.drop.concurrency,
        )
        .await?;
        eprintln!("bench: raw Lua ceiling {ceiling:.0} calls/s");
        let mut batched_ceilings = Vec::new();
        for &batch in &opts.ceiling_batches {
            let c = ceiling::batched(
                &settings.redis,
                opts.drop.users,
                opts.drop.concurrency,
                batch,
            )
            .await?;
            eprintln!(
                "bench: batched script ceiling, {batch} a call: {:.0} admissions/s",
                c.admissions_per_sec
            );
            batched_ceilings.push(c);
        }
        Ok(Self {
            tokens: Arc::new(tokens.users),
            client,
            db,
            gate,
            coupons,
            ceiling,
            batched_ceilings,
            redis_mode: format!("{:?}", settings.redis.mode).to_lowercase(),
            redis: settings.redis.clone(),
        })
    }

    /// The database-backed page, and a control that touches no data store: when both slow
    /// down alike during the spike, the cause is the machine, not the database.
    fn probes(
        &self,
        opts: &BenchOptions,
        stop: &CancellationToken,
    ) -> (JoinHandle<Histogram<u64>>, JoinHandle<Histogram<u64>>) {
        let spawn = |path: &str| {
            probe::spawn(
                format!("{}{path}", opts.drop.url),
                self.tokens.iter().take(PROBE_USERS).cloned().collect(),
                opts.probe_rate,
                stop.clone(),
            )
        };
        (spawn("/me/coupons"), spawn("/health/live"))
    }

    async fn idle_probes(
        &self,
        opts: &BenchOptions,
    ) -> anyhow::Result<(Histogram<u64>, Histogram<u64>)> {
        let stop = CancellationToken::new();
        let (page, live) = self.probes(opts, &stop);
        tokio::time::sleep(Duration::from_secs_f64(opts.idle_secs)).await;
        stop.cancel();
        Ok((page.await?, live.await?))
    }

    /// The crowd, with the probes and the pipeline sampler running, until every winner is
    /// persisted.
    async fn spike(&self, opts: &BenchOptions) -> anyhow::Result<Spike> {
        let (started, wall_started) = (Instant::now(), Utc::now());
        let stop_sampling = CancellationToken::new();
        let sampling = tokio::spawn(sampler::run(
            self.gate.clone(),
            self.db.clone(),
            self.coupons.clone(),
            opts.service_pid,
            started,
            stop_sampling.clone(),
        ));
        let stop_probes = CancellationToken::new();
        let (page, live) = self.probes(opts, &stop_probes);
        let apply_urls = self
            .coupons
            .iter()
            .map(|c| format!("{}/coupons/{c}/issue", opts.drop.url))
            .collect();
        let before = gate_cost::mark(&self.client, &opts.ops_url, &self.redis).await;
        let samples = crowd::run(
            &self.client,
            reqwest::Method::POST,
            Arc::new(apply_urls),
            self.tokens.clone(),
            opts.drop.concurrency,
            started,
        )
        .await;
        let apply_seconds = started.elapsed().as_secs_f64();
        let gate_cost = gate_cost::between(
            &before,
            &gate_cost::mark(&self.client, &opts.ops_url, &self.redis).await,
        );
        stop_probes.cancel();
        let (page, live) = (page.await?, live.await?);
        eprintln!(
            "bench: crowd done in {apply_seconds:.2} s; waiting for every winner to be persisted"
        );
        let last_persisted = drop::wait_for_rows(&self.db, &self.coupons, opts.drop.stock).await?;
        stop_sampling.cancel();
        let winners = u64::from(opts.drop.stock) * self.coupons.len() as u64;
        let redis_bytes_per_winner =
            footprint::redis_bytes_per_winner(&self.redis, &self.gate, &self.coupons, winners)
                .await?;
        eprintln!("bench: the floor, the losers again and position polling, same connections");
        let rates = floor::measure(
            &self.client,
            &opts.drop.url,
            &self.coupons,
            &self.tokens,
            &samples,
            opts.drop.concurrency,
        )
        .await;
        Ok(Spike {
            samples,
            apply_seconds,
            wall_started,
            page,
            live,
            last_persisted,
            redis_bytes_per_winner,
            progress: sampling.await?,
            rates,
            gate_cost,
        })
    }
}

/// Every figure of the run, checked against PostgreSQL.
async fn summarise(
    setup: &Setup,
    opts: &BenchOptions,
    spike: Spike,
    page_idle: Histogram<u64>,
    live_idle: Histogram<u64>,
) -> anyhow::Result<Report> {
    let samples = &spike.samples;
    let mut latency = report::new_histogram();
    for s in samples {
        latency.saturating_record(s.latency_us);
    }
    let count = |status: u16| samples.iter().filter(|s| s.status == status).count() as u64;
    let admissions: Vec<_> = samples.iter().filter(|s| s.status == 202).collect();
    let at = |us: u64| spike.wall_started + chrono::Duration::microseconds(us as i64);
    let last_admission = admissions.iter().map(|s| s.done_us).max().map(at);
    // When the last event sold out (its last unit was admitted).
    let sold_out: Vec<u64> = admissions
        .iter()
        .filter(|s| s.position == Some(opts.drop.stock))
        .map(|s| s.done_us)
        .collect();
    let sold_out_at = (sold_out.len() == setup.coupons.len())
        .then(|| sold_out.iter().max().map(|us| *us as f64 / 1000.0))
        .flatten();
    let [page_idle, page_spike, live_idle, live_spike] =
        [&page_idle, &spike.page, &live_idle, &spike.live].map(report::Percentiles::from);
    let apply_throughput = samples.len() as f64 / spike.apply_seconds;
    Ok(Report {
        users: opts.drop.users,
        stock: opts.drop.stock,
        events: setup.coupons.len() as u32,
        redis_mode: setup.redis_mode.clone(),
        concurrency: opts.drop.concurrency,
        apply_seconds: spike.apply_seconds,
        apply_throughput,
        admitted: count(202),
        sold_out: count(410),
        other_answers: samples.len() as u64 - count(202) - count(410),
        ceiling_throughput: setup.ceiling,
        batched_ceilings: setup.batched_ceilings.clone(),
        gate_cost: spike.gate_cost.clone(),
        order: order::measure(samples, setup.coupons.len() as u32),
        throughput_ratio: apply_throughput / setup.ceiling,
        page_p99_ratio: page_spike.p99_ms / page_idle.p99_ms.max(0.001),
        page_to_control_p99_ratio: page_spike.p99_ms / live_spike.p99_ms.max(0.001),
        apply_floor_ratio: apply_throughput / spike.rates.floor.max(1e-9),
        sold_out_floor_ratio: spike.rates.sold_out / spike.rates.floor.max(1e-9),
        position_floor_ratio: spike.rates.position / spike.rates.floor.max(1e-9),
        rates: spike.rates.clone(),
        live_p99_ratio: live_spike.p99_ms / live_idle.p99_ms.max(0.001),
        live_idle,
        live_spike,
        apply_latency: report::Percentiles::from(&latency),
        page_idle,
        page_spike,
        first_request_to_sold_out_ms: sold_out_at,
        last_admission_to_last_persisted_ms: last_admission
            .zip(spike.last_persisted)
            .map(|(a, p)| (p - a).num_microseconds().unwrap_or_default() as f64 / 1000.0),
        redis_bytes_per_winner: spike.redis_bytes_per_winner,
        max_rss_mib: spike
            .progress
            .iter()
            .filter_map(|p| p.rss_mib)
            .reduce(f64::max),
        verification: drop::verify(&setup.db, &setup.coupons, opts.drop.stock).await?,
        targets: Vec::new(),
        timeline: report::buckets(samples, Duration::from_millis(250)),
        progress: spike.progress,
    })
}

fn write(report: &Report, out: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(report)?)?;
    chart::draw(report, &out.join("chart.svg"))?;
    eprintln!(
        "bench: wrote {0}/report.json and {0}/chart.svg",
        out.display()
    );
    Ok(())
}
