use clap::Parser;

use fcfs_coupon::cli::{self, Cli};

/// mimalloc: per-thread free lists instead of glibc's arenas, whose locks and consolidation
/// showed in the apply path's profile (see README, Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cli::run(Cli::parse()).await
}
