use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{eventually, spawn_app};

/// The value of one series in the Prometheus text format, e.g. `fcfs_apply_total{result="admitted"}`.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test]
async fn metrics_count_a_small_spike_exactly() {
    let app = spawn_app().await;
    let coupon = app.create_stock(10).await;
    let statuses = app.apply_all(coupon, 1..=30, 16).await;
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::ACCEPTED)
            .count(),
        10
    );
    assert_eq!(app.apply(coupon, 1).await.status(), StatusCode::OK);
    app.wait_for_rows(coupon, 10).await;

    let pending = format!("fcfs_pending_winners{{coupon=\"{coupon}\"}}");
    let text = eventually(
        "the pipeline's counters",
        Duration::from_secs(20),
        || async {
            let resp = app.get("/metrics").await;
            assert_eq!(resp.status(), StatusCode::OK);
            let text = resp.text().await.unwrap();
            let lags: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("fcfs_consumer_lag{"))
                .collect();
            let caught_up = !lags.is_empty() && lags.iter().all(|l| l.ends_with(" 0"));
            (series(&text, "fcfs_consumer_rows_persisted_total") == Some(10.0)
                && series(&text, &pending) == Some(0.0)
                && caught_up)
                .then_some(text)
        },
    )
    .await;

    assert_eq!(
        series(&text, "fcfs_apply_total{result=\"admitted\"}"),
        Some(10.0)
    );
    assert_eq!(
        series(&text, "fcfs_apply_total{result=\"sold_out\"}"),
        Some(20.0)
    );
    assert_eq!(
        series(&text, "fcfs_apply_total{result=\"already\"}"),
        Some(1.0)
    );
    assert_eq!(
        series(&text, "fcfs_apply_duration_seconds_count"),
        Some(31.0)
    );
    assert_eq!(series(&text, "fcfs_issuer_published_total"), Some(10.0));
    assert_eq!(
        series(&text, "fcfs_issuer_publish_failures_total"),
        Some(0.0)
    );
    assert_eq!(
        series(&text, "fcfs_consumer_failed_events_total"),
        Some(0.0)
    );
    assert_eq!(
        series(
            &text,
            &format!("fcfs_inflight_winners{{coupon=\"{coupon}\"}}")
        ),
        Some(0.0)
    );
    assert!(
        !text.contains("fcfs_dependency_errors_total{"),
        "no dependency failed:\n{text}"
    );
    assert!(!text.contains("user"), "no user ids in labels:\n{text}");
}
