//! A randomized fault checker (issue 23), in Jepsen's shape: a generator of applicants, a
//! nemesis of faults, both drawn from one seed, and a checker that judges the recorded history
//! against PostgreSQL. Every run prints its seed and schedule; a failing seed replays with
//! `FCFS_CHAOS_SEED=<n> cargo test --test api chaos::replay -- --ignored --nocapture`.
//!
//! The seed fixes what is asked and when (arrivals, faults, configuration); the service's own
//! interleaving is real, so a replay meets the same schedule, not necessarily the same race.

mod checker;
#[cfg(test)]
mod checker_tests;
mod generator;
mod history;
mod nemesis;
mod report;
mod rng;
mod run;
mod schedule;
mod system;

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures::{stream, FutureExt, StreamExt};

/// CI's seeds, chosen by their schedules to cover every fault kind between them: Redis killed
/// with AOF (6) and without (24), a wipe (17), SCRIPT FLUSH (3, 6), the broker held (17) and cut
/// (6, 24), an instance killed (3). Few instance kills: on Tansu 0.6.0 a consumer that rejoins
/// the group can leave a partition assigned to nobody for good (seed 8 on some runs: the topic
/// holds 30 winners, the group commits 15, and a restore waits for them forever), which fails a
/// schedule on the development broker rather than on the service; `consumed` in the report
/// shows it.
const FIXED_SEEDS: [u64; 4] = [3, 6, 17, 24];

#[tokio::test]
async fn fixed_seeds() {
    // Two at a time: a schedule mostly waits on its own clock, and each has servers of its own.
    let summaries: Vec<report::Summary> = stream::iter(FIXED_SEEDS)
        .map(|seed| judge(seed, true))
        .buffer_unordered(2)
        .collect()
        .await;
    let failed: Vec<&report::Summary> = summaries.iter().filter(|s| !s.clean).collect();
    assert!(
        failed.is_empty(),
        "schedules failed (full reports above):\n{}",
        failed
            .iter()
            .map(|s| s.gist.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Replays one schedule: `FCFS_CHAOS_SEED=<n>`.
#[tokio::test]
#[ignore = "replays a schedule named by FCFS_CHAOS_SEED"]
async fn replay() {
    let Some(seed) = env_number("FCFS_CHAOS_SEED") else {
        eprintln!("chaos::replay skipped: set FCFS_CHAOS_SEED=<seed> to replay a schedule");
        return;
    };
    assert!(
        judge(seed, true).await.clean,
        "seed {seed} failed (details above)"
    );
}

/// Random schedules: `FCFS_CHAOS_SEEDS=<n>` of them, or as many as fit in
/// `FCFS_CHAOS_MINUTES=<m>`; one line each, then a table per fault kind.
#[tokio::test]
#[ignore = "a long search, run by scripts/chaos.sh"]
async fn search() {
    let (seeds, minutes) = (
        env_number("FCFS_CHAOS_SEEDS"),
        env_number("FCFS_CHAOS_MINUTES"),
    );
    if seeds.is_none() && minutes.is_none() {
        eprintln!("chaos::search skipped: set FCFS_CHAOS_SEEDS=<n> or FCFS_CHAOS_MINUTES=<m>");
        return;
    }
    let until = minutes.map(|m| Instant::now() + Duration::from_secs(m * 60));
    let mut next = rng::Rng::new(random_start(), 0);
    let mut reports = Vec::new();
    while seeds.is_none_or(|n| (reports.len() as u64) < n)
        && until.is_none_or(|t| Instant::now() < t)
    {
        reports.push(judge(next.next_u64() % 1_000_000_000, false).await);
    }
    report::table(&reports);
    // A schedule the development broker spoiled says nothing about the service either way.
    let failed = reports.iter().filter(|r| !r.clean && !r.spoiled).count();
    assert_eq!(failed, 0, "{failed} of {} schedules failed", reports.len());
}

/// Runs one schedule and prints it (in full when `verbose` or failed, else its line). A run
/// the harness could not finish (a process that would not start) counts as failed with its
/// panic, so the other seeds still run.
async fn judge(seed: u64, verbose: bool) -> report::Summary {
    match AssertUnwindSafe(run::run(seed)).catch_unwind().await {
        Ok(report) if verbose || !report.clean() => {
            report.print();
            report.summary()
        }
        Ok(report) => {
            eprintln!("{}", report.line());
            report.summary()
        }
        Err(panic) => {
            let what = (panic.downcast_ref::<String>().map(String::as_str))
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("?");
            eprintln!("chaos seed {seed}: the harness failed: {what}");
            report::Summary {
                seed,
                kinds: schedule::Schedule::from_seed(seed).kinds(),
                clean: false,
                spoiled: false,
                rules: vec!["harness failed"],
                took: Duration::ZERO,
                gist: format!("chaos seed {seed}: the harness failed: {what}"),
            }
        }
    }
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
    )
}

/// A search starts somewhere new each time; each seed it draws is printed, so any replays.
fn random_start() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    nanos ^ u64::from(std::process::id())
}
