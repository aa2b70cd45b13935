//! Fuzzing against the contract: schemathesis (PyPI, installed by scripts/test.sh) generates
//! valid and invalid requests from openapi/openapi.json and sends them, with a valid admin
//! token, to a running service. No response may be a 5xx, and every one must match the spec
//! (status, content type, headers, schema). Bounded: a fixed seed and a time budget.

use std::path::PathBuf;

use crate::helpers::spawn_app_with;

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
    app.create_stock(1_000).await;
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    let report =
        std::env::temp_dir().join(format!("{}-schemathesis", app.settings.redis.key_prefix));

    let output = tokio::process::Command::new(&st)
        .args(["run", spec, "--url", &app.address])
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
        .args([
            "--max-examples",
            "40",
            "--max-time",
            "90",
            "--seed",
            "20261122",
        ])
        .args(["--workers", "2", "--request-timeout", "10"])
        .args([
            "--generation-database",
            "none",
            "--no-color",
            "--suppress-health-check",
            "all",
        ])
        .arg("--report-dir")
        .arg(&report)
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
}
