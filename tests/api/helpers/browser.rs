//! Scripts in tests/browser/ run by node, driving Debian's headless Chromium with
//! playwright-core (both installed by scripts/test.sh). Screenshots go to
//! target/test-artifacts/.

use std::path::PathBuf;
use std::process::Stdio;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");

/// Where a script's screenshot `name` is kept.
pub fn artifact(name: &str) -> PathBuf {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/test-artifacts"
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// `node <script> <args…>` in tests/browser, its output piped. Async: the app under test is
/// served by the same runtime.
pub fn browser_script(script: &str, args: &[&str]) -> tokio::process::Command {
    assert!(
        PathBuf::from(DIR)
            .join("node_modules/playwright-core")
            .exists(),
        "playwright-core is missing: run `npm ci --prefix tests/browser` (scripts/test.sh does)"
    );
    let mut command = tokio::process::Command::new("node");
    command
        .current_dir(DIR)
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}
