//! The live dashboard in a real browser (Debian's headless Chromium driven by playwright-core,
//! installed by scripts/test.sh). The screenshot is kept in target/test-artifacts/.

use reqwest::StatusCode;
use serde_json::json;

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{artifact, browser_script, spawn_app};

#[tokio::test]
async fn the_dashboard_shows_the_right_numbers_after_a_spike() {
    // Arrange: the page is open before the crowd arrives, as an operator's would be.
    let app = spawn_app().await;
    let coupon = app.create_stock(20).await;
    let page = app.get("/dashboard").await;
    assert!(page.text().await.unwrap().contains("Live event"));
    let expected = json!({
        "stock": "20", "admitted": "20", "published": "20", "issued": "20", "remaining": "0",
        "applications": "60", "state": "SOLD OUT",
    });
    let screenshot = artifact("dashboard.png");
    let mut browser = browser_script(
        "dashboard.mjs",
        &[
            &app.address,
            &coupon.to_string(),
            &expected.to_string(),
            screenshot.to_str().unwrap(),
        ],
    )
    .spawn()
    .expect("node runs");
    let mut lines = BufReader::new(browser.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
    assert!(
        matches!(&ready, Ok(Ok(Some(line))) if line == "ready"),
        "the page did not load: {ready:?}"
    );

    // Act: 60 applicants for 20 coupons, all the way to PostgreSQL, while the page watches.
    let statuses = app.apply_all(coupon, 1..=60, 16).await;
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::ACCEPTED)
            .count(),
        20
    );
    app.wait_for_rows(coupon, 20).await;

    // Assert: the browser saw every number reach its value.
    let run = browser.wait_with_output().await.expect("node runs");
    let rest = lines.next_line().await.ok().flatten().unwrap_or_default();
    assert!(
        run.status.success(),
        "the dashboard did not show {expected}:\n{rest}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 10_000,
        "screenshot kept"
    );
}
