//! The live dashboard in a real browser (Debian's headless Chromium driven by playwright-core,
//! installed by scripts/test.sh). The screenshot is kept in target/test-artifacts/.

use reqwest::StatusCode;
use serde_json::json;

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::ChildStdout;

use crate::helpers::{artifact, browser_script, spawn_app_with, MANUAL};

/// The next line the browser script prints, within a minute.
async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
    match line {
        Ok(Ok(Some(line))) => line,
        other => panic!("the browser script said nothing: {other:?}"),
    }
}

#[tokio::test]
async fn the_dashboard_shows_each_stage_of_a_spike() {
    // Arrange: the issuer ticks only when the test says, so the page can be caught between
    // admission and issuance. The page is open before the crowd arrives, as an operator's
    // would be.
    let app = spawn_app_with(|s| s.issuer.schedule = MANUAL.into()).await;
    let coupon = app.create_stock(20).await;
    let page = app.get("/dashboard").await;
    assert!(page.text().await.unwrap().contains("Live event"));
    let states = json!([
        {
            "stock": "20", "admitted": "20", "pending": "20", "published": "0", "issued": "0",
            "remaining": "0", "applications": "60", "state": "SOLD OUT",
            "books": "books balance",
        },
        {
            "stock": "20", "admitted": "20", "pending": "0", "published": "20", "issued": "20",
            "remaining": "0", "applications": "60", "state": "SOLD OUT",
            "books": "books balance",
        },
    ]);
    let screenshot = artifact("dashboard.png");
    let mut browser = browser_script(
        "dashboard.mjs",
        &[
            &app.address,
            &coupon.to_string(),
            &states.to_string(),
            screenshot.to_str().unwrap(),
        ],
    )
    .spawn()
    .expect("node runs");
    let mut lines = BufReader::new(browser.stdout.take().unwrap()).lines();
    assert_eq!(next_line(&mut lines).await, "ready", "the page loaded");

    // Act: 60 applicants for 20 coupons; the page shows them admitted and waiting for the
    // issuer. Then one tick takes them all the way to PostgreSQL.
    let statuses = app.apply_all(coupon, 1..=60, 16).await;
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::ACCEPTED)
            .count(),
        20
    );
    let waiting = next_line(&mut lines).await;
    let tick = app.issuer().run_once().await.unwrap();
    app.wait_for_rows(coupon, 20).await;
    let issued = next_line(&mut lines).await;

    // Assert: the browser saw each stage, in order.
    let run = browser.wait_with_output().await.expect("node runs");
    assert_eq!(waiting, "state 0", "admitted, not yet published");
    assert_eq!(tick.published, 20);
    assert_eq!(issued, "state 1", "published and issued");
    assert!(
        run.status.success(),
        "the dashboard did not show {states}:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 10_000,
        "screenshot kept"
    );
}
