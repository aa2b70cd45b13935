//! Swagger UI in a real browser, as the README tells a newcomer to use it: authorize as the
//! admin, create an event with `POST /coupons`, authorize as a user, apply, read the position,
//! then the fairness log's key and the event's checkpoint.

use serde_json::Value;

use crate::helpers::{artifact, browser_script, spawn_app};

#[tokio::test]
async fn swagger_ui_creates_an_event_and_applies_for_it() {
    let app = spawn_app().await;
    let (admin, user) = (app.admin_token(), app.user_token(42));
    let screenshot = artifact("swagger.png");

    let run = browser_script(
        "swagger.mjs",
        &[&app.address, &admin, &user, screenshot.to_str().unwrap()],
    )
    .output()
    .await
    .expect("node runs");

    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the Swagger UI walk failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(seen["create"]["status"], 201, "{seen}");
    assert_eq!(seen["apply"]["status"], 202, "{seen}");
    assert_eq!(seen["position"]["status"], 200, "{seen}");
    assert_eq!(seen["key"]["status"], 200, "{seen}");
    assert_eq!(seen["checkpoint"]["status"], 200, "{seen}");
    let created: Value = serde_json::from_str(seen["create"]["body"].as_str().unwrap()).unwrap();
    let position: Value = serde_json::from_str(seen["position"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(position["userId"], 42);
    assert_eq!(position["position"], 1);
    // The event the browser created is the one the service holds.
    let coupon = created["id"].as_i64().unwrap();
    assert_eq!(app.coupon_json(coupon).await["name"], "Swagger sale");
    assert_eq!(app.admitted(coupon).await, vec![42]);
    // The log's key and checkpoint as Swagger UI showed them are the service's.
    assert_eq!(
        seen["key"]["body"].as_str().unwrap(),
        app.get("/fairness/key").await.text().await.unwrap()
    );
    let checkpoint = seen["checkpoint"]["body"].as_str().unwrap();
    assert!(
        checkpoint.starts_with(&format!("fcfs-coupon-development/coupons/{coupon}\n")),
        "{checkpoint}"
    );
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000);
}
