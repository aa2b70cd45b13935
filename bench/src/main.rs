use clap::{Parser, Subcommand};
use fcfs_bench::{issuance, spike};
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
    /// Admit winners straight through the gate and time the pipeline's drain to PostgreSQL
    /// (runs the issuer and the consumer in-process on a database, prefix and topic of its own).
    Issuance {
        #[arg(long, default_value_t = 10_000)]
        winners: u32,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Spike(options) => {
            let report = spike::run(&Settings::load(None)?, &options).await?;
            report.print_summary();
        }
        Command::Issuance { winners } => issuance::run(winners).await?,
    }
    Ok(())
}
