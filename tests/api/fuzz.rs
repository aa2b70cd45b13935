//! Fuzzing against the contract: schemathesis (PyPI, installed by scripts/test.sh) generates
//! valid and invalid requests from the spec the service serves and sends them, with a valid
//! admin token, to the running service. No response may be a 5xx, and every one must match the
//! spec (status, content type, headers, schema). Bounded: a fixed seed and 40 examples per
//! operation, not a time budget (a slow machine must not generate fewer cases).
//!
//! The spec is parsed strictly first (a duplicate key fails), half of the generated `couponId`s
//! are events that exist (real ones and rehearsals), and the HAR report proves every operation was exercised, those on an
//! event answering 2xx at least once, not only 404.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;

use crate::helpers::{parse_strict, spawn_app_with};

/// Where scripts/test.sh installs schemathesis; `SCHEMATHESIS` overrides.
fn schemathesis() -> PathBuf {
    std::env::var_os("SCHEMATHESIS").map_or_else(
        || {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".local/share/fcfs-coupon/schemathesis/bin/st")
        },
        PathBuf::from,
    )
}

/// Every (METHOD, path template) of the spec.
fn operations(spec: &Value) -> BTreeSet<(String, String)> {
    spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

/// The path template `path` is an instance of (`{name}` matches one segment).
fn template_of<'a>(path: &str, templates: &'a BTreeSet<String>) -> Option<&'a String> {
    let segments: Vec<&str> = path.split('/').collect();
    templates.iter().find(|t| {
        let parts: Vec<&str> = t.split('/').collect();
        parts.len() == segments.len()
            && parts
                .iter()
                .zip(&segments)
                .all(|(p, s)| p.starts_with('{') || p == s)
    })
}

/// Statuses answered per (METHOD, path template), from schemathesis' HAR report.
fn answered(har: &Value, templates: &BTreeSet<String>) -> BTreeMap<(String, String), Vec<u16>> {
    let mut seen: BTreeMap<(String, String), Vec<u16>> = BTreeMap::new();
    for entry in har["log"]["entries"].as_array().unwrap() {
        let url = reqwest::Url::parse(entry["request"]["url"].as_str().unwrap()).unwrap();
        let Some(template) = template_of(url.path(), templates) else {
            continue; // a path the fuzzer made up
        };
        let method = entry["request"]["method"].as_str().unwrap().to_uppercase();
        let status = entry["response"]["status"].as_u64().unwrap_or(0) as u16;
        seen.entry((method, template.clone()))
            .or_default()
            .push(status);
    }
    seen
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_response_outside_the_spec() {
    let st = schemathesis();
    assert!(
        st.exists(),
        "{} is missing: run scripts/test.sh (it installs tests/fuzz/requirements.txt)",
        st.display()
    );
    let app = spawn_app_with(|s| {
        // Every request carries the same token; the limits have tests of their own.
        s.rate_limit.per_user_per_sec = 0;
    })
    .await;
    // Two real events and two rehearsals (the only events `DELETE` removes).
    let rehearsal =
        || app.create_coupon(serde_json::json!({"name": "R", "stock": 1_000, "rehearsal": true}));
    let events = [
        app.create_stock(1_000).await,
        app.create_stock(1_000).await,
        rehearsal().await,
        rehearsal().await,
    ];
    let served = app.get("/openapi.json").await.text().await.unwrap();
    let spec = parse_strict(&served).expect("the served spec is strict JSON");
    let work = std::env::temp_dir().join(format!("{}-schemathesis", app.settings.redis.key_prefix));
    std::fs::create_dir_all(&work).unwrap();
    let config = work.join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            "[dictionaries.events]\nvalues = {events:?}\n\n[parameters]\n\
             \"path.couponId\" = {{ dictionary = \"events\", probability = 0.5 }}\n"
        ),
    )
    .unwrap();
    let har = work.join("run.har");

    let output = tokio::process::Command::new(&st)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/openapi.json", app.address)])
        .args(["--url", &app.address])
        .args([
            "--header",
            &format!("Authorization: Bearer {}", app.admin_token()),
        ])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance",
        ])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "40", "--seed", "20261122"])
        .args(["--workers", "2", "--request-timeout", "10"])
        .args([
            "--generation-database",
            "none",
            "--no-color",
            "--suppress-health-check",
            "all",
        ])
        .args(["--report", "har", "--report-har-path"])
        .arg(&har)
        .output()
        .await
        .expect("schemathesis runs");

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("passed"), "{stdout}");

    let har: Value = serde_json::from_slice(&std::fs::read(&har).unwrap()).unwrap();
    let templates: BTreeSet<String> = operations(&spec).into_iter().map(|(_, p)| p).collect();
    let seen = answered(&har, &templates);
    for (method, path) in operations(&spec) {
        let statuses = seen
            .get(&(method.clone(), path.clone()))
            .unwrap_or_else(|| panic!("{method} {path} was never exercised"));
        assert!(
            statuses.iter().any(|s| (200..300).contains(s)),
            "{method} {path} never succeeded (only {statuses:?}): events that exist were not reached"
        );
    }
    assert!(
        seen[&("POST".to_owned(), "/coupons".to_owned())].contains(&201),
        "POST /coupons created an event"
    );
}
