//! `fcfs-bench durability`: the price of `APP_REDIS__ACK_REPLICAS=1`. The admission script is
//! called straight through the gate (no HTTP) against a master with one replica, both private
//! `redis-server`s on loopback, with and without waiting for the replica, in alternating rounds
//! so the machine's noise falls on both alike.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use fcfs_coupon::configuration::RedisSettings;
use serde::Serialize;
use tokio::process::{Child, Command};

use crate::spike::ceiling;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DurabilityReport {
    pub calls: u32,
    pub concurrency: usize,
    /// Admission-script calls per second, one figure per round.
    pub ack0_per_sec: Vec<f64>,
    pub ack1_per_sec: Vec<f64>,
    /// Median with a replica's confirmation over median without.
    pub ratio: f64,
}

pub async fn run(
    redis: &RedisSettings,
    calls: u32,
    concurrency: usize,
    rounds: u32,
) -> anyhow::Result<DurabilityReport> {
    let (master_port, replica_port) = (free_port()?, free_port()?);
    let _master = server(master_port, &[])?;
    let _replica = server(
        replica_port,
        &["--replicaof", "127.0.0.1", &master_port.to_string()],
    )?;
    let url = format!("redis://127.0.0.1:{master_port}");
    wait_for_replica(&url).await?;
    let mut report = DurabilityReport {
        calls,
        concurrency,
        ack0_per_sec: Vec::new(),
        ack1_per_sec: Vec::new(),
        ratio: 0.0,
    };
    for _ in 0..rounds {
        for ack in [0, 1] {
            let mut settings = redis.clone();
            settings.url = url.clone().into();
            settings.ack_replicas = ack;
            let rate = ceiling::measure(&settings, calls, calls, concurrency).await?;
            eprintln!("durability: ack_replicas={ack}: {rate:.0} applies/s");
            match ack {
                0 => report.ack0_per_sec.push(rate),
                _ => report.ack1_per_sec.push(rate),
            }
        }
    }
    report.ratio = median(&report.ack1_per_sec) / median(&report.ack0_per_sec);
    Ok(report)
}

fn server(port: u16, extra: &[&str]) -> anyhow::Result<Child> {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--repl-diskless-sync-delay",
            "0",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting redis-server")
}

async fn wait_for_replica(url: &str) -> anyhow::Result<()> {
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(client) = redis::Client::open(url) else {
            continue;
        };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            continue;
        };
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await?;
        if info.lines().any(|l| l.trim() == "connected_slaves:1") {
            return Ok(());
        }
    }
    anyhow::bail!("the replica did not connect within 10 s")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}
