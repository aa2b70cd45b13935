use clap::Parser;

use fcfs_coupon::cli::{self, Cli};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cli::run(Cli::parse()).await
}
