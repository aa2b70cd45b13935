//! What a production operator meets: the process refuses to start on a secret that protects
//! nothing.

use tokio::process::Command;

/// Runs `fcfs-coupon <args>` in production with `secret` as `APP_AUTH__JWT_SECRET` (unset when
/// `None`); the exit status and what it wrote on stderr.
async fn in_production(args: &[&str], secret: Option<&str>) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fcfs-coupon"));
    command
        .args(args)
        .env("APP_ENV", "production")
        .env("APP_HTTP__ADDR", "127.0.0.1:0")
        .env_remove("APP_AUTH__JWT_SECRET");
    if let Some(secret) = secret {
        command.env("APP_AUTH__JWT_SECRET", secret);
    }
    let output = command.output().await.expect("the binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn production_refuses_to_serve_or_mint_without_a_real_secret() {
    for args in [&["serve"][..], &["token", "--user", "1", "--admin"]] {
        let (ok, stderr) = in_production(args, None).await;
        assert!(!ok, "{args:?} started without a secret");
        assert!(
            stderr.contains("APP_AUTH__JWT_SECRET is not set"),
            "{args:?}: {stderr}"
        );

        let (ok, stderr) = in_production(args, Some("too-short-a-secret")).await;
        assert!(!ok);
        assert!(stderr.contains("production needs at least 32"), "{stderr}");

        let known = fcfs_coupon::configuration::DEVELOPMENT_JWT_SECRET;
        let (ok, stderr) = in_production(args, Some(known)).await;
        assert!(!ok);
        assert!(stderr.contains("publicly known"), "{stderr}");
    }
    let (ok, stderr) = in_production(&["token", "--user", "1"], Some(&"k".repeat(32))).await;
    assert!(ok, "a real secret mints: {stderr}");
}
