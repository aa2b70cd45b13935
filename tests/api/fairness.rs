//! Verifiable fairness: every event's admissions in a signed, append-only Merkle log. A winner
//! proves their place with a receipt, anyone checks the whole order with `fcfs-coupon verify`
//! (HTTP only), the audit finds rows changed after their leaves, and a rewritten log fails
//! verification from any checkpoint or receipt handed out before.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use base64::prelude::{Engine, BASE64_STANDARD};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{artifact, browser_script, eventually, run_command, spawn_app, TestApp};

/// 19-digit user ids: none can appear in a hash, a size or a time by chance.
fn user(i: i64) -> i64 {
    7_311_000_000_000_000_000 + i * 7_919
}

/// Runs `fcfs-coupon verify` as a customer would, with nothing but its arguments.
async fn verify(args: &[&str]) -> (bool, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_fcfs-coupon"))
        .arg("verify")
        .args(args)
        .env_clear()
        .output()
        .await
        .expect("the binary runs");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

fn saved(name: &str, contents: &str) -> PathBuf {
    let path = artifact(&format!("{}-{name}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, contents).unwrap();
    path
}

impl TestApp {
    async fn text(&self, path: &str) -> String {
        let resp = self.get(path).await;
        assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
        resp.text().await.unwrap()
    }

    /// The event's log once it is complete: every place handed out has its leaf.
    async fn complete_log(&self, coupon: i64) -> Value {
        eventually(
            "the log to be complete",
            Duration::from_secs(30),
            || async {
                let log = self.coupon_json(coupon).await["log"].clone();
                (log["complete"] == json!(true)).then_some(log)
            },
        )
        .await
    }

    /// Waits for the rewritten log's checkpoint of `size` leaves (not `before`).
    async fn signed_anew(&self, coupon: i64, size: u64, before: &str) {
        let path = format!("/coupons/{coupon}/log/checkpoint");
        eventually(
            "the new log to be signed",
            Duration::from_secs(30),
            || async {
                // 503 until the first checkpoint of the new log is signed.
                let body = self.get(&path).await.text().await.unwrap();
                (body.lines().nth(1) == Some(&size.to_string()) && body != before).then_some(())
            },
        )
        .await;
    }

    /// The position answer with the receipt asked for, once it is there.
    async fn receipt(&self, coupon: i64, user: i64) -> Value {
        let path = format!("/coupons/{coupon}/position?receipt=true");
        eventually("a receipt", Duration::from_secs(30), || async {
            let resp = (self.client.get(self.url(&path)))
                .bearer_auth(self.user_token(user))
                .send()
                .await
                .unwrap();
            // Receipts are limited per user: asked every 50 ms, this one is told to wait.
            if resp.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
                return None;
            }
            assert_eq!(resp.status(), reqwest::StatusCode::OK);
            let answer: Value = resp.json().await.unwrap();
            (!answer["receipt"].is_null()).then_some(answer)
        })
        .await
    }

    /// A crowd of 20 for `stock` coupons, persisted, and the log complete.
    pub(crate) async fn finished_event(&self, stock: u32) -> (i64, Vec<i64>) {
        let coupon = self.create_stock(stock).await;
        self.apply_all(coupon, (1..=20).map(user), 8).await;
        self.wait_for_rows(coupon, stock as usize).await;
        self.complete_log(coupon).await;
        let winners = self.issued_rows(coupon).await;
        let mut by_position: Vec<(i32, i64)> = winners.iter().map(|&(u, p)| (p, u)).collect();
        by_position.sort();
        (coupon, by_position.into_iter().map(|(_, u)| u).collect())
    }

    /// Rewrites history the way a dishonest operator would: changes the rows under a lock on
    /// the log, then throws the log away so the builder appends and signs it again, with the
    /// same key.
    async fn rewrite(&self, coupon: i64, statements: &[&str]) {
        let mut tx = self.db.begin().await.unwrap();
        for statement in [
            "SELECT 1 FROM fairness_log WHERE coupon_id = $1 FOR UPDATE",
            "ALTER TABLE coupon_issue DROP CONSTRAINT coupon_issue_position_key",
        ]
        .iter()
        .chain(statements)
        .chain(&[
            "ALTER TABLE coupon_issue ADD CONSTRAINT coupon_issue_position_key UNIQUE (coupon_id, position)",
            "DELETE FROM fairness_leaf WHERE coupon_id = $1",
            "UPDATE fairness_log SET size = 0, root = NULL, checkpoint = NULL, complete = false WHERE coupon_id = $1",
        ]) {
            let query = sqlx::query(statement);
            let query = if statement.contains("$1") { query.bind(coupon) } else { query };
            query.execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
}

#[tokio::test]
async fn each_winner_proves_their_place_and_anyone_checks_the_whole_order() {
    // Arrange: 20 users for 12 coupons, all the way to PostgreSQL and the log.
    let app = spawn_app().await;
    let (coupon, winners) = app.finished_event(12).await;
    let url = app.address.clone();
    let id = coupon.to_string();

    // Act: what a customer would do, through the public endpoints only.
    let (all_ok, report) = verify(&["--url", &url, "--coupon", &id]).await;
    let answer = app.receipt(coupon, winners[4]).await;
    let receipt = saved("receipt.json", &answer.to_string());
    let (receipt_ok, receipt_report) =
        verify(&["--url", &url, "--receipt", receipt.to_str().unwrap()]).await;
    let key = app.text("/fairness/key").await;
    let (offline_ok, offline_report) =
        verify(&["--receipt", receipt.to_str().unwrap(), "--key", &key]).await;

    // Assert: every check passes, each on its line.
    assert!(all_ok, "{report}");
    assert!(
        report.contains("ok   whole log: positions 1..12 dense, arrivals strictly increasing, within the stock of 12; 12 issued, 0 lost, 0 failed"),
        "{report}"
    );
    assert!(
        report.contains("ok   checkpoint signature: 12 leaves"),
        "{report}"
    );
    assert!(receipt_ok, "{receipt_report}");
    assert!(
        receipt_report.contains("ok   receipt in the latest log"),
        "{receipt_report}"
    );
    assert!(offline_ok, "{offline_report}");
    assert_eq!(offline_report.lines().count(), 2, "{offline_report}");
    let r = &answer["receipt"];
    assert_eq!(r["position"], json!(5));
    assert_eq!(r["userId"], json!(winners[4]));
    assert_eq!(r["kind"], json!("ISSUED"));
    assert_eq!(r["treeSize"], json!(12));
    assert_eq!(
        answer["retryAfterMs"],
        Value::Null,
        "the answer is final with its receipt"
    );
    // Polling without asking gets no receipt, only that it is ready.
    let polled: Value = app.position(coupon, winners[4]).await.json().await.unwrap();
    assert_eq!(
        (polled["receiptReady"].clone(), polled["receipt"].clone()),
        (json!(true), Value::Null)
    );
}

#[tokio::test]
async fn a_forged_receipt_does_not_verify() {
    let app = spawn_app().await;
    let (coupon, winners) = app.finished_event(6).await;
    let key = app.text("/fairness/key").await;
    let genuine = app.receipt(coupon, winners[1]).await["receipt"].clone();
    let other = app.receipt(coupon, winners[2]).await["receipt"].clone();

    let forgeries = [
        ("another nonce", "nonce", json!("00".repeat(16))),
        ("another position", "position", json!(3)),
        ("another user", "userId", json!(winners[2])),
        ("another's leaf", "leaf", other["leaf"].clone()),
        (
            "another's proof",
            "inclusionProof",
            other["inclusionProof"].clone(),
        ),
    ];
    for (what, field, value) in forgeries {
        let mut forged = genuine.clone();
        forged[field] = value;
        let file = saved("forged.json", &forged.to_string());
        let (ok, report) = verify(&["--receipt", file.to_str().unwrap(), "--key", &key]).await;
        assert!(!ok, "a receipt with {what} verified:\n{report}");
        assert!(
            report.contains("FAIL receipt inclusion"),
            "{what}: {report}"
        );
    }
    let genuine = saved("genuine.json", &genuine.to_string());
    let (ok, report) = verify(&["--receipt", genuine.to_str().unwrap(), "--key", &key]).await;
    assert!(ok, "{report}");
}

#[tokio::test]
async fn the_served_tree_and_proofs_agree_with_an_independent_rfc6962_implementation() {
    // Arrange: 13 leaves, so the tree is not a perfect one.
    let app = spawn_app().await;
    let (coupon, _) = app.finished_event(13).await;
    let log = |rest: &str| format!("/coupons/{coupon}/log/{rest}");
    let leaves: Value =
        serde_json::from_str(&app.text(&log("leaves?start=1&end=14")).await).unwrap();
    let checkpoint = app.text(&log("checkpoint")).await;
    let root = checkpoint.lines().nth(2).unwrap().to_owned();
    let app = &app;
    let proof = |path: String| async move {
        let body: Value = serde_json::from_str(&app.text(&path).await).unwrap();
        body["hashes"].clone()
    };
    let mut inclusion = Vec::new();
    for size in [1, 2, 5, 8, 13] {
        for position in 1..=size {
            let hashes = proof(log(&format!(
                "proof/inclusion?position={position}&size={size}"
            )))
            .await;
            inclusion.push(json!({"index": position - 1, "size": size, "hashes": hashes}));
        }
    }
    let mut consistency = Vec::new();
    for (from, to) in [
        (1, 13),
        (2, 13),
        (3, 7),
        (4, 13),
        (8, 13),
        (12, 13),
        (13, 13),
        (5, 6),
    ] {
        let hashes = proof(log(&format!("proof/consistency?from={from}&to={to}"))).await;
        consistency.push(json!({"from": from, "to": to, "hashes": hashes}));
    }
    let given = json!({
        "leaves": leaves["leaves"].as_array().unwrap().iter().map(|l| l["leaf"].clone()).collect::<Vec<_>>(),
        "root": root,
        "inclusion": inclusion,
        "consistency": consistency,
    });

    // Act: Python's hashlib and RFC 9162's verification algorithms, nothing of ours.
    let mut python = tokio::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fairness/rfc6962.py"
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use tokio::io::AsyncWriteExt;
    let mut stdin = python.stdin.take().unwrap();
    stdin.write_all(given.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = python.wait_with_output().await.unwrap();

    // Assert
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    assert_eq!(leaves["leaves"].as_array().unwrap().len(), 13);
    assert!(
        checkpoint.starts_with(&format!("fcfs-coupon-development/coupons/{coupon}\n13\n")),
        "{checkpoint}"
    );
}

#[tokio::test]
async fn no_public_byte_of_the_log_names_a_user() {
    let app = spawn_app().await;
    let (coupon, _) = app.finished_event(10).await;
    let log = |rest: &str| format!("/coupons/{coupon}/log/{rest}");
    let mut served: BTreeMap<String, String> = BTreeMap::new();
    let mut paths = vec![
        "/fairness/key".to_owned(),
        format!("/coupons/{coupon}"),
        log("checkpoint"),
        log("leaves?start=1&end=11"),
    ];
    for position in 1..=10 {
        paths.push(log(&format!("proof/inclusion?position={position}&size=10")));
        paths.push(log(&format!("proof/consistency?from={position}&to=10")));
    }
    for path in paths {
        let body = app.text(&path).await;
        served.insert(path, body);
    }
    // The leaves' own bytes, and every base64 value decoded.
    let mut bytes: Vec<Vec<u8>> = served.values().map(|b| b.as_bytes().to_vec()).collect();
    for body in served.values() {
        for word in
            body.split(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '='))
        {
            if let Ok(decoded) = BASE64_STANDARD.decode(word) {
                bytes.push(decoded);
            }
        }
    }

    for i in 1..=20 {
        let id = user(i);
        let needles = [
            id.to_string().into_bytes(),
            id.to_be_bytes().to_vec(),
            id.to_le_bytes().to_vec(),
        ];
        for haystack in &bytes {
            for needle in &needles {
                assert!(
                    !haystack
                        .windows(needle.len())
                        .any(|w| w == needle.as_slice()),
                    "user {id} appears in what the log serves"
                );
            }
        }
    }
    assert!(served.len() > 20);
}

#[tokio::test]
async fn the_audit_reports_rows_changed_or_deleted_after_their_leaves() {
    // Arrange
    let app = spawn_app().await;
    let (coupon, winners) = app.finished_event(8).await;
    let (clean, _) = run_command(&app.settings, &["audit", "--coupon", &coupon.to_string()]).await;

    // Act: swap positions 2 and 3 in PostgreSQL, then delete the row at 6.
    let mut tx = app.db.begin().await.unwrap();
    for (user, position) in [(winners[1], 100), (winners[2], 2), (winners[1], 3)] {
        sqlx::query("UPDATE coupon_issue SET position = $3 WHERE coupon_id = $1 AND user_id = $2")
            .bind(coupon)
            .bind(user)
            .bind(position)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let (swapped_ok, swapped) =
        run_command(&app.settings, &["audit", "--coupon", &coupon.to_string()]).await;
    sqlx::query("DELETE FROM coupon_issue WHERE coupon_id = $1 AND position = 6")
        .bind(coupon)
        .execute(&app.db)
        .await
        .unwrap();
    let (_, deleted) =
        run_command(&app.settings, &["audit", "--coupon", &coupon.to_string()]).await;

    // Assert: exactly the positions touched, as LOG_MISMATCH, and a non-zero exit.
    assert!(clean, "the untouched event audits clean");
    assert!(!swapped_ok);
    let mismatched = |report: &str| -> Vec<i64> {
        let report: Value = serde_json::from_str(report).unwrap();
        report["discrepancies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"] == json!("LOG_MISMATCH"))
            .map(|d| d["position"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(mismatched(&swapped), [2, 3], "{swapped}");
    assert_eq!(mismatched(&deleted), [2, 3, 6], "{deleted}");
}

#[tokio::test]
async fn a_rewritten_log_fails_from_every_checkpoint_and_receipt_handed_out_before() {
    // Arrange: a customer saved the final checkpoint, a winner their receipt.
    let app = spawn_app().await;
    let (coupon, winners) = app.finished_event(8).await;
    let (url, id) = (app.address.clone(), coupon.to_string());
    let checkpoint = saved(
        "checkpoint",
        &app.text(&format!("/coupons/{coupon}/log/checkpoint")).await,
    );
    let receipt = saved(
        "receipt.json",
        &app.receipt(coupon, winners[1]).await.to_string(),
    );
    let check = || async {
        verify(&[
            "--url",
            &url,
            "--coupon",
            &id,
            "--checkpoint",
            checkpoint.to_str().unwrap(),
            "--receipt",
            receipt.to_str().unwrap(),
        ])
        .await
    };
    let (honest, honest_report) = check().await;

    // Act 1: swap two leaves (positions 2 and 3), and let the log be appended and signed anew.
    app.rewrite(
        coupon,
        &["UPDATE coupon_issue SET position = 5 - position WHERE coupon_id = $1 AND position IN (2, 3)"],
    )
    .await;
    app.signed_anew(coupon, 8, &std::fs::read_to_string(&checkpoint).unwrap())
        .await;
    let (swapped, swapped_report) = check().await;

    // Act 2: drop a leaf (position 4; the later ones move up).
    app.rewrite(
        coupon,
        &[
            "DELETE FROM coupon_issue WHERE coupon_id = $1 AND position = 4",
            "UPDATE coupon_issue SET position = position - 1 WHERE coupon_id = $1 AND position > 4",
        ],
    )
    .await;
    app.signed_anew(coupon, 7, "").await;
    let (dropped, dropped_report) = check().await;

    // Assert: the new logs verify on their own (signed, dense, ordered by the new rows)...
    assert!(honest, "{honest_report}");
    assert!(!swapped && !dropped);
    assert!(
        swapped_report.contains("ok   checkpoint signature: 8 leaves"),
        "{swapped_report}"
    );
    assert!(
        swapped_report.contains("ok   receipt inclusion"),
        "{swapped_report}"
    );
    // ...but not against what was handed out before.
    assert!(
        swapped_report.contains("FAIL consistency: same size, another root"),
        "{swapped_report}"
    );
    assert!(
        swapped_report.contains("FAIL receipt in the latest log"),
        "{swapped_report}"
    );
    // The swapped rows kept their arrival times: the new order gives itself away too.
    assert!(
        swapped_report
            .contains("FAIL whole log: position 3 arrived no later than the one before it"),
        "{swapped_report}"
    );
    assert!(
        dropped_report.contains("FAIL consistency: the log shrank: 8 leaves then, 7 now"),
        "{dropped_report}"
    );
    assert!(
        dropped_report.contains("FAIL receipt in the latest log"),
        "{dropped_report}"
    );
}

#[tokio::test]
async fn the_dashboard_verifies_a_winners_place_in_the_browser() {
    // Arrange: a finished event, a winner and someone who did not get in.
    let app = spawn_app().await;
    let (coupon, winners) = app.finished_event(6).await;
    let loser = (1..=20).map(user).find(|u| !winners.contains(u)).unwrap();
    app.receipt(coupon, winners[2]).await;
    let screenshot = artifact("dashboard-verify.png");

    // Act: paste each token into "verify my place".
    let run = browser_script(
        "verify.mjs",
        &[
            &app.address,
            &coupon.to_string(),
            &app.user_token(winners[2]),
            &app.user_token(loser),
            screenshot.to_str().unwrap(),
        ],
    )
    .output()
    .await
    .expect("node runs");

    // Assert: verified in the browser for the winner, refused when forged, none for the loser.
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(
        lines[0],
        format!("checkpoint: fcfs-coupon-development/coupons/{coupon} 6")
    );
    assert!(
        lines[1].starts_with("winner: Verified: position 3 of 6 in the signed log"),
        "{said}"
    );
    assert_eq!(
        lines[2],
        "forged: NOT verified: the leaf does not commit to you with this nonce"
    );
    assert_eq!(lines[3], "loser: No receipt: your status is SOLD_OUT");
}
