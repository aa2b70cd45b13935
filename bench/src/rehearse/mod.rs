//! `fcfs-bench rehearse`: a drop rehearsed against any deployment, over HTTP only, with a
//! yes/no verdict. It creates a rehearsal event (not listed; only rehearsal users' tokens may
//! apply), lets clients poll it while it opens, sends the crowd at the opening, re-applies a
//! share of it, polls every winner's position until ISSUED, runs the audit through the API, and
//! judges the run against thresholds (exit 1 on any breach). Then it deletes the event.

mod chart;
mod traffic;
mod verdict;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::Utc;
use fcfs_coupon::auth::TokenKeys;
use fcfs_coupon::configuration::Settings;
use fcfs_coupon::domain::UserId;
use serde_json::{json, Value};

pub use verdict::Verdict;

#[derive(Debug, Clone, clap::Args)]
pub struct RehearseOptions {
    /// The deployment (its public port).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Distinct rehearsal users, each with its own token.
    #[arg(long, default_value_t = 5_000)]
    pub users: u32,
    /// The rehearsal event's stock.
    #[arg(long, default_value_t = 500)]
    pub stock: u32,
    /// Seconds from creating the event to its opening, while clients poll it (and a few apply
    /// too early).
    #[arg(long, default_value_t = 3.0)]
    pub ramp: f64,
    /// Keep-alive connections the crowd applies over.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Clients polling the event from the ramp to the end, each every 250 ms.
    #[arg(long, default_value_t = 16)]
    pub pollers: usize,
    /// Share of the users who apply again after the spike.
    #[arg(long, default_value_t = 0.1)]
    pub reapply: f64,
    /// An admin token for the deployment (creating, auditing and deleting the event). Without
    /// it one is minted with `APP_AUTH__JWT_SECRET` (development: the built-in secret).
    #[arg(long, env = "FCFS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Breach: applications' p99 above this.
    #[arg(long, default_value_t = 500.0)]
    pub max_p99_ms: f64,
    /// Breach: position reads' p99 above this.
    #[arg(long, default_value_t = 500.0)]
    pub max_position_p99_ms: f64,
    /// Breach: the last winner ISSUED later than this after the last admission. The run waits
    /// twice this (at least 10 s) for them.
    #[arg(long, default_value_t = 15_000.0)]
    pub max_drain_ms: f64,
    /// Breach: sold out later than this after the first application at the opening.
    #[arg(long)]
    pub max_sold_out_ms: Option<f64>,
    /// Breach: more answers than this outside what a drop answers (5xx, 429, 401, transport
    /// errors, ...).
    #[arg(long, default_value_t = 0)]
    pub max_errors: u64,
    /// Where `report.json` and `chart.svg` go.
    #[arg(long, default_value = "rehearsal-results")]
    pub out: PathBuf,
    /// Keep the rehearsal event (and its rows) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
}

const TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Rehearsal users' ids start above this: far from any real user's, so a real user of the same
/// id shares no per-user rate-limit bucket with them (the service keeps rehearsal and real
/// users' events and coupons apart whatever the ids).
const REHEARSAL_USERS: i64 = 9_000_000_000_000_000_000;
/// How long the delete keeps asking while the service answers 409 EVENT_BUSY.
const DELETE_PATIENCE: Duration = Duration::from_secs(15);

/// Runs the rehearsal and returns its verdict (already printed and written).
pub async fn run(settings: &Settings, opts: &RehearseOptions) -> anyhow::Result<Verdict> {
    if opts.stock == 0 || opts.users == 0 {
        bail!("--users and --stock must be positive");
    }
    let admin = match &opts.admin_token {
        Some(token) => token.clone(),
        None => {
            let secret = settings.auth.checked_secret(settings.env)?.context(
                "no admin token: pass --admin-token (or FCFS_ADMIN_TOKEN) from your identity provider",
            )?;
            TokenKeys::new(&secret).mint(UserId::new(1)?, true, TOKEN_TTL)?
        }
    };
    let rehearsal = settings
        .auth
        .checked_rehearsal_secret(settings.env)?
        .context("APP_AUTH__REHEARSAL_SECRET is not set: rehearsal users need it")?;
    let keys = TokenKeys::rehearsal(&rehearsal);
    let tokens: Vec<String> = (1..=i64::from(opts.users))
        .map(|u| keys.mint(UserId::new(REHEARSAL_USERS + u)?, false, TOKEN_TTL))
        .collect::<anyhow::Result<_>>()?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency + opts.pollers + 8)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    let coupon = create_event(&client, opts, &admin).await?;
    eprintln!(
        "rehearse: event {coupon} (rehearsal), stock {}, {} users, opening in {} s",
        opts.stock, opts.users, opts.ramp
    );
    let run = traffic::Drop {
        client: client.clone(),
        url: opts.url.clone(),
        coupon,
        tokens: Arc::new(tokens),
        started: Instant::now(),
    };
    let observed = run.play(opts).await?;
    let audit = get_json(
        &client,
        &format!("{}/coupons/{coupon}/audit", opts.url),
        &admin,
    )
    .await?;
    let event =
        event_after_audit(&client, &format!("{}/coupons/{coupon}", opts.url), &admin).await?;
    let verdict = verdict::judge(opts, &observed, &audit, &event);
    verdict.print();
    verdict::write(&verdict, &observed, &opts.out)?;
    if !opts.keep {
        delete_event(&client, opts, coupon, &admin).await;
    }
    Ok(verdict)
}

async fn create_event(
    client: &reqwest::Client,
    opts: &RehearseOptions,
    admin: &str,
) -> anyhow::Result<i64> {
    let opens_at = Utc::now() + chrono::Duration::milliseconds((opts.ramp * 1000.0) as i64);
    let resp = client
        .post(format!("{}/coupons", opts.url))
        .bearer_auth(admin)
        .json(&json!({
            "name": format!("rehearsal {}", Utc::now().format("%Y-%m-%d %H:%M:%S")),
            "stock": opts.stock,
            "opensAt": opens_at,
            "rehearsal": true,
        }))
        .send()
        .await
        .with_context(|| format!("is the service running at {}?", opts.url))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or_default();
    if status != reqwest::StatusCode::CREATED {
        bail!("creating the rehearsal event: {status} {body}");
    }
    body["id"].as_i64().context("the created event has no id")
}

async fn get_json(client: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<Value> {
    let resp = client.get(url).bearer_auth(token).send().await?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!("GET {url}: {status} {body}");
    }
    Ok(body)
}

/// The event's view read after the audit: the service serves a copy up to a second old,
/// dated by `asOf`, so it is asked until the copy is newer than the question.
async fn event_after_audit(
    client: &reqwest::Client,
    url: &str,
    token: &str,
) -> anyhow::Result<Value> {
    let asked = chrono::Utc::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let event = get_json(client, url, token).await?;
        let as_of = event["asOf"]
            .as_str()
            .map(chrono::DateTime::parse_from_rfc3339);
        if as_of.is_some_and(|t| t.is_ok_and(|t| t >= asked)) || Instant::now() > deadline {
            return Ok(event);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes the event; while the service answers 409 (winners or messages still on their way:
/// the consumer group commits its offsets a moment after the rows), asks again for a while.
async fn delete_event(client: &reqwest::Client, opts: &RehearseOptions, coupon: i64, admin: &str) {
    let url = format!("{}/coupons/{coupon}", opts.url);
    let deadline = Instant::now() + DELETE_PATIENCE;
    loop {
        match client.delete(&url).bearer_auth(admin).send().await {
            Ok(resp) if resp.status() == reqwest::StatusCode::NO_CONTENT => {
                eprintln!("rehearse: deleted rehearsal event {coupon} and its rows");
                return;
            }
            Ok(resp)
                if resp.status() == reqwest::StatusCode::CONFLICT && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(resp) => {
                eprintln!(
                    "rehearse: kept rehearsal event {coupon} ({}); delete it later: DELETE {url}",
                    resp.status()
                );
                return;
            }
            Err(e) => {
                eprintln!("rehearse: could not delete rehearsal event {coupon}: {e}");
                return;
            }
        }
    }
}
