//! What every bench that drives a running service over HTTP shares: the drop's shape (its
//! options), the users' tokens, the HTTP client, creating the events, and waiting for and
//! checking their rows in PostgreSQL.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use fcfs_coupon::auth::TokenKeys;
use fcfs_coupon::configuration::Settings;
use fcfs_coupon::domain::{CouponId, UserId};

use super::report::Verification;

/// The drop: who applies, to what, over how many connections, and where the results go.
#[derive(Debug, Clone, clap::Args)]
pub struct DropOptions {
    /// The running service.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Distinct applicants, each with its own token.
    #[arg(long, default_value_t = 100_000)]
    pub users: u32,
    /// Each event's stock.
    #[arg(long, default_value_t = 10_000)]
    pub stock: u32,
    /// Events running at once; applicant i applies to event i mod K (on a cluster, the
    /// events spread over the masters). Needs users >= stock x events.
    #[arg(long, default_value_t = 1)]
    pub events: u32,
    /// Keep-alive connections applying at once (and Redis connections for the ceiling).
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Where `report.json` (and a chart, where the bench draws one) go.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
}

const TOKEN_TTL: Duration = Duration::from_secs(3600);
const DRAIN_DEADLINE: Duration = Duration::from_secs(120);

/// The tokens of a drop: an admin's, and user i+1's at index i.
pub struct Tokens {
    pub admin: String,
    pub users: Vec<String>,
}

impl DropOptions {
    pub fn check(&self) -> anyhow::Result<()> {
        if u64::from(self.users) < u64::from(self.stock) * u64::from(self.events.max(1)) {
            bail!("--users must be at least --stock x --events");
        }
        Ok(())
    }

    /// Tokens minted with the service's secret (`APP_AUTH__JWT_SECRET`).
    pub fn tokens(&self, settings: &Settings) -> anyhow::Result<Tokens> {
        let keys = TokenKeys::new(&settings.auth.secret());
        Ok(Tokens {
            admin: keys.mint(UserId::new(1)?, true, TOKEN_TTL)?,
            users: (1..=i64::from(self.users))
                .map(|u| keys.mint(UserId::new(u)?, false, TOKEN_TTL))
                .collect::<anyhow::Result<_>>()?,
        })
    }

    /// `events` fresh events of `stock`, open now.
    pub async fn create_events(
        &self,
        client: &reqwest::Client,
        admin: &str,
    ) -> anyhow::Result<Vec<CouponId>> {
        let mut coupons = Vec::new();
        for _ in 0..self.events.max(1) {
            coupons.push(create_coupon(client, &self.url, self.stock, admin).await?);
        }
        Ok(coupons)
    }
}

/// A client that keeps `connections` keep-alive connections to the service.
pub fn client(connections: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(connections + 8)
        .tcp_nodelay(true)
        .build()?)
}

pub async fn create_coupon(
    client: &reqwest::Client,
    url: &str,
    stock: u32,
    admin: &str,
) -> anyhow::Result<CouponId> {
    let resp = client
        .post(format!("{url}/coupons"))
        .bearer_auth(admin)
        .json(&serde_json::json!({"name": "bench", "stock": stock}))
        .send()
        .await
        .with_context(|| format!("is the service running at {url}?"))?;
    if !resp.status().is_success() {
        bail!(
            "creating the bench coupon: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    let id = resp.json::<serde_json::Value>().await?["id"]
        .as_i64()
        .context("no coupon id")?;
    Ok(CouponId::new(id)?)
}

fn ids(coupons: &[CouponId]) -> Vec<i64> {
    coupons.iter().map(|c| c.get()).collect()
}

/// Waits until every event has `stock` rows; the newest row's `issued_at`.
pub async fn wait_for_rows(
    db: &sqlx::PgPool,
    coupons: &[CouponId],
    stock: u32,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    let deadline = Instant::now() + DRAIN_DEADLINE;
    let stock = i64::from(stock) * coupons.len() as i64;
    loop {
        let (rows, last): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT count(*), max(issued_at) FROM coupon_issue WHERE coupon_id = ANY($1)",
        )
        .bind(ids(coupons))
        .fetch_one(db)
        .await?;
        if rows >= stock {
            return Ok(last);
        }
        if Instant::now() > deadline {
            eprintln!("bench: only {rows} of {stock} rows after {DRAIN_DEADLINE:?}");
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Per event: exactly `stock` rows, distinct users, positions exactly 1..=stock.
pub async fn verify(
    db: &sqlx::PgPool,
    coupons: &[CouponId],
    stock: u32,
) -> anyhow::Result<Verification> {
    let per_event: Vec<(i64, i64, Option<i32>, Option<i32>)> = sqlx::query_as(
        "SELECT count(*), count(DISTINCT user_id), min(position), max(position) \
         FROM coupon_issue WHERE coupon_id = ANY($1) GROUP BY coupon_id",
    )
    .bind(ids(coupons))
    .fetch_all(db)
    .await?;
    let stock = i64::from(stock);
    // Unique positions (a constraint) within 1..=stock, as many as the stock: exactly 1..=stock.
    let dense = |(rows, _, min, max): &(i64, i64, Option<i32>, Option<i32>)| {
        *rows == stock && *min == Some(1) && max.map(i64::from) == Some(stock)
    };
    let positions_dense = per_event.len() == coupons.len() && per_event.iter().all(dense);
    let distinct_once = per_event.iter().all(|(_, users, _, _)| *users == stock);
    Ok(Verification {
        rows: per_event.iter().map(|e| e.0).sum(),
        distinct_users: per_event.iter().map(|e| e.1).sum(),
        positions_dense,
        ok: positions_dense && distinct_once,
    })
}
