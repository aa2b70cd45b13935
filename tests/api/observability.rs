use std::time::Duration;

use reqwest::StatusCode;

use serde_json::{json, Value};

use crate::helpers::{eventually, isolated_settings, observe, spawn_app, ServiceProcess};

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
            let resp = app.ops_get("/metrics").await;
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

#[tokio::test]
async fn every_role_serves_metrics_and_its_own_readiness_on_the_ops_port() {
    let settings = isolated_settings();
    settings.database.create_if_missing().await.unwrap();
    let api = ServiceProcess::spawn(&settings, &["api"]).await;
    let issuer = ServiceProcess::spawn(&settings, &["issuer"]).await;
    let consumer = ServiceProcess::spawn(&settings, &["consumer"]).await;
    let client = reqwest::Client::new();
    let get = |url: String| {
        let client = client.clone();
        async move { client.get(url).send().await.unwrap() }
    };

    // Readiness names what each role uses, and only that.
    for (process, expected) in [
        (
            &api,
            json!({"status": "up", "redis": "up", "postgres": "up"}),
        ),
        (
            &issuer,
            json!({"status": "up", "redis": "up", "kafka": "up"}),
        ),
        (
            &consumer,
            json!({"status": "up", "redis": "up", "postgres": "up", "kafka": "up"}),
        ),
    ] {
        // The ops port answers from a check once a second: not ready until one has passed.
        let ready = eventually("the role ready", Duration::from_secs(30), || async {
            let ready = get(format!("{}/health/ready", process.ops_address)).await;
            (ready.status() == StatusCode::OK).then_some(ready)
        })
        .await;
        assert_eq!(ready.json::<Value>().await.unwrap(), expected);
        let live = get(format!("{}/health/live", process.ops_address)).await;
        assert_eq!(live.status(), StatusCode::OK);
        let metrics = get(format!("{}/metrics", process.ops_address)).await;
        assert_eq!(metrics.status(), StatusCode::OK);
        assert!(metrics.text().await.unwrap().contains("# TYPE fcfs_"));
    }
    // The consumer's lag is visible where it is computed, once it has consumed something.
    let app = observe(settings.clone(), &api).await;
    let coupon = app.create_stock(3).await;
    app.apply_all(coupon, 1..=3, 3).await;
    app.wait_for_rows(coupon, 3).await;
    eventually("the consumer's lag", Duration::from_secs(20), || async {
        let text = get(format!("{}/metrics", consumer.ops_address))
            .await
            .text()
            .await
            .unwrap();
        let counted = text.contains("fcfs_consumer_rows_persisted_total 3");
        (counted && text.contains("fcfs_consumer_lag{")).then_some(())
    })
    .await;

    // The public port keeps its health routes and no longer exposes metrics.
    assert_eq!(
        get(format!("{}/metrics", api.address)).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(format!("{}/health/ready", api.address)).await.status(),
        StatusCode::OK
    );
}
