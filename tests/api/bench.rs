//! A small run of `fcfs-bench spike`, so the benchmark cannot rot. Figures are not asserted
//! (speed is measured by the bench, not by tests); its counts and its verification are.

use fcfs_bench::spike::{self as bench, BenchOptions};

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_small_bench_run_verifies_and_writes_its_report() {
    let app = spawn_app().await;
    let out = std::env::temp_dir().join(format!("fcfs-bench-{}", uuid::Uuid::new_v4()));
    let options = BenchOptions {
        url: app.address.clone(),
        users: 300,
        stock: 10,
        events: 3,
        concurrency: 16,
        probe_rate: 20,
        idle_secs: 0.3,
        out: out.clone(),
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
