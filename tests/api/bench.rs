//! Small runs of `fcfs-bench spike` and `crowd`, so the benchmarks cannot rot. Figures are not asserted
//! (speed is measured by the bench, not by tests); its counts and its verification are.

use fcfs_bench::crowd::{self, CrowdOptions, PollMode};
use fcfs_bench::spike::{self as bench, BenchOptions, DropOptions};

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_small_bench_run_verifies_and_writes_its_report() {
    let app = spawn_app().await;
    let out = std::env::temp_dir().join(format!("fcfs-bench-{}", uuid::Uuid::new_v4()));
    let options = BenchOptions {
        drop: DropOptions {
            url: app.address.clone(),
            users: 300,
            stock: 10,
            events: 3,
            concurrency: 16,
            out: out.clone(),
        },
        probe_rate: 20,
        idle_secs: 0.3,
        service_pid: Some(std::process::id()),
        ops_url: app.ops_address.clone(),
        ceiling_batches: vec![1, 4],
    };

    let report = bench::run(&app.settings, &options)
        .await
        .expect("bench runs");

    assert_eq!(
        (report.admitted, report.sold_out, report.other_answers),
        (30, 270, 0)
    );
    assert!(report.verification.ok, "{:?}", report.verification);
    assert_eq!(report.verification.rows, 30);
    assert!(report.last_admission_to_last_persisted_ms.is_some());
    assert!(report.ceiling_throughput > 0.0 && report.max_rss_mib.is_some());
    assert_eq!(report.targets.len(), 11);
    // The batched script ceilings, and what the crowd's calls carried and cost Redis.
    let batches: Vec<usize> = report.batched_ceilings.iter().map(|c| c.batch).collect();
    assert_eq!(batches, [1, 4]);
    assert!(report
        .batched_ceilings
        .iter()
        .all(|c| c.admissions_per_sec > 0.0));
    let per_call = report.gate_cost.applications_per_call.unwrap();
    assert!(per_call >= 1.0, "{per_call}");
    assert_eq!(report.order.real_time_violations, 0);
    // Every winner's queue entry and status are kept: some bytes each, not kilobytes.
    assert!(
        (10.0..1000.0).contains(&report.redis_bytes_per_winner),
        "{}",
        report.redis_bytes_per_winner
    );
    // The floor and the other routes, after the spike, on the same connections.
    assert!(report.rates.floor > 0.0 && report.rates.position > 0.0);
    assert!(report.rates.sold_out > 0.0);
    assert_eq!(
        report.rates.sold_out_other_answers, 0,
        "every loser is SOLD_OUT"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        (json["stock"].clone(), json["events"].clone()),
        (10.into(), 3.into())
    );
    let svg = std::fs::read_to_string(out.join("chart.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("Winners through the pipeline"));
    std::fs::remove_dir_all(out).ok();
}

/// A small run of `fcfs-bench crowd`: both phases run, every route is served, the pollers honour
/// `retryAfterMs` without stalling, and the Redis commands per request are counted.
#[tokio::test]
async fn a_small_crowd_run_serves_every_route_and_counts_redis_commands() {
    let app = spawn_app().await;
    let out = std::env::temp_dir().join(format!("fcfs-crowd-{}", uuid::Uuid::new_v4()));
    let options = CrowdOptions {
        drop: DropOptions {
            url: app.address.clone(),
            users: 300,
            stock: 10,
            events: 2,
            concurrency: 8,
            out: out.clone(),
        },
        readers: 2,
        pollers: 2,
        poll: PollMode::Honour,
        duration: 0.5,
        cost_secs: 0.2,
    };

    let report = crowd::run(&app.settings, &options)
        .await
        .expect("crowd runs");

    for phase in [&report.alone, &report.crowd] {
        assert_eq!((phase.admitted, phase.apply.other), (20, 0));
    }
    assert!(report.verification.ok, "{:?}", report.verification);
    assert_eq!(report.verification.rows, 40);
    assert!(report.alone.read.is_none() && report.alone.poll.is_none());
    for route in [&report.crowd.read, &report.crowd.poll] {
        let route = route.as_ref().expect("readers and pollers in the crowd");
        assert!(route.served > 0 && route.other == 0);
    }
    let redis = report.redis.as_ref().expect("standalone Redis");
    for cost in [&redis.read_sold_out, &redis.read_open, &redis.poll_sold_out] {
        assert!(cost.as_ref().expect("measured").requests > 0);
    }
    assert_eq!(report.targets.len(), 3);
    assert!(out.join("report.json").exists());
    std::fs::remove_dir_all(out).ok();
}
