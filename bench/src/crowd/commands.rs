//! Redis commands per request: the sum of `calls` over every command in `INFO commandstats`, read
//! on the Redis the service uses before and after a short phase in which only one kind of
//! request runs. The service's own background work (issuer ticks, watchers) in a phase is
//! estimated from an idle phase just before, and taken off.

use std::time::{Duration, Instant};

use fcfs_coupon::configuration::{RedisMode, RedisSettings};
use fcfs_coupon::gate::RedisConnection;
use serde::Serialize;

/// One connection, kept: a new one would add its handshake's commands to the count.
pub struct Counter {
    conn: RedisConnection,
}

/// Commands counted in one phase.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cost {
    pub requests: u64,
    pub seconds: f64,
    /// Every command Redis ran in the phase (less the counter's own `INFO`).
    pub commands: u64,
    /// `commands` over `requests`, nothing taken off.
    pub per_request_raw: f64,
    /// With the idle phase's rate of background commands taken off (never below 0).
    pub per_request: f64,
}

impl Counter {
    /// None in cluster mode: each master counts its own, and the bench reads one.
    pub async fn connect(redis: &RedisSettings) -> anyhow::Result<Option<Self>> {
        if matches!(redis.mode, RedisMode::Cluster) {
            return Ok(None);
        }
        Ok(Some(Self {
            conn: redis.connect().await?,
        }))
    }

    /// Every command Redis has run since it started (or since `CONFIG RESETSTAT`).
    pub async fn total(&mut self) -> anyhow::Result<u64> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.conn)
            .await?;
        Ok(sum_calls(&info))
    }

    /// Commands in `run` (which returns how many requests it made), and in `idle` before it
    /// (nothing running), as a rate per second.
    pub async fn measure<F>(&mut self, background_per_sec: f64, run: F) -> anyhow::Result<Cost>
    where
        F: std::future::Future<Output = anyhow::Result<u64>>,
    {
        let before = self.total().await?;
        let started = Instant::now();
        let requests = run.await?;
        let seconds = started.elapsed().as_secs_f64();
        // The first INFO is counted once it has run; the second is not yet.
        let commands = (self.total().await? - before).saturating_sub(1);
        let per = |n: f64| n / requests.max(1) as f64;
        Ok(Cost {
            requests,
            seconds,
            commands,
            per_request_raw: per(commands as f64),
            per_request: per((commands as f64 - background_per_sec * seconds).max(0.0)),
        })
    }

    /// The background's commands per second while nothing is asked.
    pub async fn idle(&mut self, length: Duration) -> anyhow::Result<f64> {
        let cost = self
            .measure(0.0, async {
                tokio::time::sleep(length).await;
                Ok::<_, anyhow::Error>(0)
            })
            .await?;
        Ok(cost.commands as f64 / cost.seconds)
    }
}

/// The sum of `calls=` over the `cmdstat_…` lines.
fn sum_calls(info: &str) -> u64 {
    info.lines()
        .filter(|l| l.starts_with("cmdstat_"))
        .filter_map(|l| {
            l.split_once(':')?
                .1
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_calls_over_every_command() {
        let info = "# Commandstats\r\n\
            cmdstat_get:calls=21,usec=175,usec_per_call=8.33,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_evalsha:calls=4,usec=90,usec_per_call=22.5,rejected_calls=1,failed_calls=0\r\n";
        assert_eq!(super::sum_calls(info), 25);
    }
}
