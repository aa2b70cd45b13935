//! The public contract as a client meets it: the spec *served* at `/openapi.json`, parsed
//! strictly, against the README's API table; and the committed copy against the served one.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{parse_strict, spawn_app};

const README: &str = include_str!("../../README.md");
/// Served outside the OpenAPI document (README says so).
const OUTSIDE_THE_SPEC: [&str; 4] = ["/docs", "/openapi.json", "/dashboard", "/metrics"];
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// `(METHOD, /path/{param})` of every operation in the README's API table.
fn readme_operations() -> BTreeSet<(String, String)> {
    let table = README
        .split("\n## API\n")
        .nth(1)
        .expect("README has an API section");
    let mut ops = BTreeSet::new();
    for row in table.lines().take_while(|l| !l.starts_with("## ")) {
        let Some(first_cell) = row.strip_prefix("| ").and_then(|r| r.split(" |").next()) else {
            continue;
        };
        for op in first_cell.split(", ") {
            let op = op.trim_matches('`');
            let Some((method, path)) = op.split_once(' ') else {
                continue;
            };
            if !METHODS.contains(&method.to_lowercase().as_str()) {
                continue;
            }
            let path = path.split('?').next().unwrap();
            if !OUTSIDE_THE_SPEC.contains(&path) {
                ops.insert((method.to_owned(), path.to_owned()));
            }
        }
    }
    ops
}

fn spec_operations(spec: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

fn operation<'a>(spec: &'a Value, method: &str, path: &str) -> &'a Value {
    &spec["paths"][path][method.to_lowercase()]
}

fn statuses(op: &Value) -> BTreeSet<String> {
    op["responses"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn the_served_spec_is_strict_json_with_every_operation_of_the_readme() {
    let app = spawn_app().await;
    let served = app.get("/openapi.json").await.text().await.unwrap();

    let spec = parse_strict(&served).expect("the served spec parses with no duplicate key");

    let readme = readme_operations();
    assert!(readme.len() >= 10, "README's API table read: {readme:?}");
    let served_ops = spec_operations(&spec);
    let missing: Vec<_> = readme.difference(&served_ops).collect();
    assert!(missing.is_empty(), "in README, not served: {missing:?}");
    let undocumented: Vec<_> = served_ops.difference(&readme).collect();
    assert!(
        undocumented.is_empty(),
        "served, not in README: {undocumented:?}"
    );
    assert!(operation(&spec, "POST", "/coupons").is_object());
    assert!(operation(&spec, "GET", "/coupons").is_object());
}

#[tokio::test]
async fn each_operation_declares_only_what_it_can_answer() {
    let app = spawn_app().await;
    let spec = parse_strict(&app.get("/openapi.json").await.text().await.unwrap()).unwrap();
    let public_store = set(&["200", "400", "404", "500", "503"]);
    let expected = [
        (
            "POST",
            "/coupons",
            set(&["201", "400", "401", "403", "413", "415", "500", "503"]),
        ),
        ("GET", "/coupons", set(&["200", "500", "503"])),
        ("GET", "/coupons/{couponId}", public_store.clone()),
        ("GET", "/coupons/{couponId}/stats", public_store.clone()),
        (
            "POST",
            "/coupons/{couponId}/issue",
            set(&[
                "200", "202", "400", "401", "403", "404", "409", "410", "429", "500", "503",
            ]),
        ),
        (
            "GET",
            "/coupons/{couponId}/position",
            set(&["200", "400", "401", "403", "404", "429", "500", "503"]),
        ),
        (
            "DELETE",
            "/coupons/{couponId}",
            set(&["204", "400", "401", "403", "404", "409", "500", "503"]),
        ),
        (
            "GET",
            "/me/coupons",
            set(&["200", "401", "429", "500", "503"]),
        ),
        (
            "GET",
            "/coupons/{couponId}/issues",
            set(&["200", "400", "401", "403", "404", "500", "503"]),
        ),
        (
            "GET",
            "/coupons/{couponId}/audit",
            set(&["200", "400", "401", "403", "404", "500", "503"]),
        ),
        ("GET", "/fairness/key", set(&["200", "404"])),
        (
            "GET",
            "/coupons/{couponId}/log/checkpoint",
            public_store.clone(),
        ),
        (
            "GET",
            "/coupons/{couponId}/log/proof/inclusion",
            public_store.clone(),
        ),
        (
            "GET",
            "/coupons/{couponId}/log/proof/consistency",
            public_store.clone(),
        ),
        (
            "GET",
            "/coupons/{couponId}/log/leaves",
            public_store.clone(),
        ),
        ("GET", "/health/live", set(&["200"])),
        ("GET", "/health/ready", set(&["200", "503"])),
    ];
    assert_eq!(
        expected.len(),
        spec_operations(&spec).len(),
        "a new operation needs a row here"
    );

    let mut ids = BTreeSet::new();
    for (method, path, want) in &expected {
        let op = operation(&spec, method, path);
        assert_eq!(&statuses(op), want, "{method} {path}");
        let id = op["operationId"].as_str().unwrap_or_default();
        assert!(
            !id.is_empty() && ids.insert(id.to_owned()),
            "{method} {path}: operationId {id:?}"
        );
        for (status, response) in op["responses"].as_object().unwrap() {
            let description = response["description"].as_str().unwrap_or_default();
            assert!(
                !description.is_empty(),
                "{method} {path} {status}: no description"
            );
        }
        if let Some(unauthorized) = op["responses"].get("401") {
            assert!(
                unauthorized["headers"]["WWW-Authenticate"].is_object(),
                "{method} {path}: 401 without WWW-Authenticate"
            );
        }
        for limited in ["429", "503"] {
            let problem = op["responses"]
                .get(limited)
                .filter(|r| r["content"]["application/problem+json"].is_object());
            if let Some(r) = problem {
                assert!(
                    r["headers"]["Retry-After"].is_object(),
                    "{method} {path} {limited}"
                );
            }
        }
    }

    // Swagger UI shows these bodies pre-filled.
    let schemas = &spec["components"]["schemas"];
    for schema in [
        "CreateCoupon",
        "CouponView",
        "ApplicationView",
        "PositionView",
    ] {
        assert!(
            schemas[schema]["example"].is_object(),
            "{schema} has no example"
        );
    }
}

#[tokio::test]
async fn a_401_answer_names_the_bearer_scheme() {
    let app = spawn_app().await;
    for resp in [
        app.apply_with("1", None).await,
        app.apply_with("1", Some("not-a-jwt")).await,
    ] {
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    }
}

#[tokio::test]
async fn the_committed_openapi_spec_is_the_served_one() {
    let app = spawn_app().await;
    let served = app.get("/openapi.json").await.text().await.unwrap();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .unwrap_or_default();
    parse_strict(&committed).expect("the committed spec parses with no duplicate key");
    assert!(
        committed.trim_end() == served.trim_end(),
        "openapi/openapi.json is out of date; regenerate it with:\n\n    \
         cargo run -q -- openapi > openapi/openapi.json\n"
    );
}

#[tokio::test]
async fn swagger_ui_and_health_are_served() {
    let app = spawn_app().await;

    let docs = app.get("/docs").await;
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.unwrap().contains("swagger"));

    let spec = parse_strict(&app.get("/openapi.json").await.text().await.unwrap()).unwrap();
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
