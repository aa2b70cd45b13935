use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::spawn_app;

#[test]
fn the_committed_openapi_spec_matches_the_code() {
    let generated = fcfs_coupon::api::spec_json();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .unwrap_or_default();
    assert!(
        committed.trim_end() == generated.trim_end(),
        "openapi/openapi.json is out of date; regenerate it with:\n\n    \
         cargo run -q -- openapi > openapi/openapi.json\n"
    );
}

#[tokio::test]
async fn swagger_ui_the_spec_and_health_are_served() {
    let app = spawn_app().await;

    let docs = app.get("/docs").await;
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.unwrap().contains("swagger"));

    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(spec["paths"]["/coupons/{couponId}/issue"]["post"].is_object());
    let apply = &spec["paths"]["/coupons/{couponId}/issue"]["post"]["responses"];
    for status in ["200", "202", "400", "401", "404", "409", "410", "503"] {
        assert!(
            apply[status].is_object(),
            "status {status} missing from the spec"
        );
    }
    assert_eq!(
        spec["components"]["securitySchemes"]["BearerAuth"]["scheme"],
        "bearer"
    );

    let live = app.get("/health/live").await;
    assert_eq!(live.status(), StatusCode::OK);
    let ready = app.get("/health/ready").await;
    let status = ready.status();
    let body: Value = ready.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"status": "up", "redis": "up", "postgres": "up", "kafka": "up"})
    );
}
