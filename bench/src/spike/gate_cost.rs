//! What one admission costs the event's Redis core during the crowd: the service's script
//! calls and the applications they carried (its `fcfs_apply_batch_size` histogram), and Redis'
//! own time in scripts (`INFO commandstats`, one server only; the issuer's claims are in it
//! too, a few calls a second).

use fcfs_coupon::configuration::{RedisMode, RedisSettings};
use serde::Serialize;

use super::ceiling::script_usec;

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GateCost {
    pub applications_per_call: Option<f64>,
    pub redis_usec_per_application: Option<f64>,
}

/// The counters at one moment.
pub struct Mark {
    applications: f64,
    calls: f64,
    usec: Option<f64>,
}

pub async fn mark(client: &reqwest::Client, ops_url: &str, redis: &RedisSettings) -> Mark {
    let metrics = match client.get(format!("{ops_url}/metrics")).send().await {
        Ok(resp) => resp.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let series = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    let usec = match redis.mode {
        RedisMode::Cluster => None,
        _ => script_usec(redis).await.ok(),
    };
    Mark {
        applications: series("fcfs_apply_batch_size_sum"),
        calls: series("fcfs_apply_batch_size_count"),
        usec,
    }
}

pub fn between(before: &Mark, after: &Mark) -> GateCost {
    let applications = after.applications - before.applications;
    let calls = after.calls - before.calls;
    let known = |v: f64| (v.is_finite() && applications > 0.0).then_some(v);
    GateCost {
        applications_per_call: known(applications / calls),
        redis_usec_per_application: after
            .usec
            .zip(before.usec)
            .and_then(|(a, b)| known((a - b) / applications)),
    }
}
