use clap::{Parser, Subcommand};
use fcfs_bench::{compare, crowd, durability, issuance, rehearse, spike};
use fcfs_coupon::configuration::Settings;

/// Benchmarks of fcfs-coupon. Configuration is the service's own (`APP_…` variables).
#[derive(Debug, Parser)]
#[command(name = "fcfs-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive a running service with a crowd; report throughput, latency and the pipeline.
    Spike(spike::BenchOptions),
    /// The crowd at the door: applications alone, then the same with event-page readers and
    /// position pollers; throughput and latency per route, and Redis commands per read and poll.
    Crowd(crowd::CrowdOptions),
    /// Admit winners straight through the gate and time the pipeline's drain to PostgreSQL,
    /// with the fairness log off and on in alternating rounds (runs the issuer and the consumer
    /// in-process, each round on a database, prefix and topic of its own).
    Issuance {
        #[arg(long, default_value_t = 10_000)]
        winners: u32,
        #[arg(long, default_value_t = 2)]
        rounds: u32,
    },
    /// Admission-script calls per second through the gate against a master with one replica,
    /// with `APP_REDIS__ACK_REPLICAS` 0 and 1 in alternating rounds (starts its own servers).
    Durability {
        #[arg(long, default_value_t = 20_000)]
        calls: u32,
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
    /// One event's admissions per second through the batched admission script straight
    /// against Redis (no HTTP), per batch size, in alternating rounds.
    Ceiling {
        #[arg(long, default_value_t = 200_000)]
        applications: u32,
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        batches: Vec<usize>,
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
    /// Spike reports (report.json) side by side, with medians and ratios to the first run.
    Compare { reports: Vec<std::path::PathBuf> },
    /// Rehearse a drop against a deployment over HTTP only, and judge it: exit 1 on any
    /// breach (README, "Rehearsing a drop").
    Rehearse(rehearse::RehearseOptions),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Spike(options) => {
            let report = spike::run(&Settings::load(None)?, &options).await?;
            report.print_summary();
        }
        Command::Crowd(options) => {
            let report = crowd::run(&Settings::load(None)?, &options).await?;
            report.print_table();
        }
        Command::Issuance { winners, rounds } => issuance::run(winners, rounds).await?,
        Command::Durability {
            calls,
            concurrency,
            rounds,
        } => {
            let report =
                durability::run(&Settings::load(None)?.redis, calls, concurrency, rounds).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Ceiling {
            applications,
            concurrency,
            batches,
            rounds,
        } => {
            let redis = Settings::load(None)?.redis;
            for round in 1..=rounds {
                for &batch in &batches {
                    let c =
                        spike::ceiling::batched(&redis, applications, concurrency, batch).await?;
                    println!("round {round}: {}", serde_json::to_string(&c)?);
                }
            }
        }
        Command::Compare { reports } => compare::run(&reports)?,
        Command::Rehearse(options) => {
            let verdict = rehearse::run(&Settings::load(None)?, &options).await?;
            if !verdict.passed {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
