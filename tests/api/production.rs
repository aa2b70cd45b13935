//! What a production operator meets: the process refuses to start on a secret that protects
//! nothing.

use reqwest::StatusCode;
use secrecy::ExposeSecret;
use tokio::process::Command;

use crate::helpers::{isolated_settings, run_command, start, Isolation};

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

#[tokio::test]
async fn production_signs_the_fairness_log_only_with_a_key_of_its_own() {
    // Arrange: a start that would get past every other check; three key files.
    let settings = isolated_settings();
    let _cleanup = Isolation::of(&settings);
    let file = |name: &str, contents: &str| {
        let path = std::env::temp_dir().join(format!("{}-{name}", settings.redis.key_prefix));
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let generated = Command::new(env!("CARGO_BIN_EXE_fcfs-coupon"))
        .args(["fairness-key", "--name", "shop.example"])
        .output()
        .await
        .unwrap();
    let own = file("own", &String::from_utf8(generated.stdout).unwrap());
    let verifier = String::from_utf8(generated.stderr).unwrap();
    let development = file(
        "development",
        "PRIVATE+KEY+fcfs-coupon-development+00000000+AQ==",
    );
    let garbage = file("garbage", "not a key");
    let check = |key: Option<String>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fcfs-coupon"));
        command
            .arg("check-config")
            .env("APP_ENV", "production")
            .env("APP_AUTH__JWT_SECRET", "k".repeat(32))
            .env("APP_DATABASE__ALLOW_PLAINTEXT", "true")
            .env_remove("APP_FAIRNESS__SIGNING_KEY_FILE");
        if let Some(key) = key {
            command.env("APP_FAIRNESS__SIGNING_KEY_FILE", key);
        }
        async move {
            let out = command.output().await.unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            (out.status.success(), text)
        }
    };

    // Act
    let (none_ok, none) = check(None).await;
    let (garbage_ok, garbage) = check(Some(garbage)).await;
    let (development_ok, development) = check(Some(development)).await;
    let (own_ok, own) = check(Some(own)).await;

    // Assert
    assert!(
        !none_ok && none.contains("APP_FAIRNESS__SIGNING_KEY_FILE is not set"),
        "{none}"
    );
    assert!(
        !garbage_ok && garbage.contains("does not hold a signed-note Ed25519 private key"),
        "{garbage}"
    );
    assert!(!development_ok, "{development}");
    assert!(own_ok, "{own}");
    let verifier = verifier.trim().strip_prefix("verifier key: ").unwrap();
    assert!(verifier.starts_with("shop.example+"), "{verifier}");
    assert!(own.contains(&format!("verifier key {verifier}")), "{own}");
}

#[tokio::test]
async fn production_refuses_a_database_url_that_could_fall_back_to_plaintext() {
    // The suite's PostgreSQL URL carries no sslmode: sqlx would "prefer" TLS and quietly
    // settle for plaintext.
    let secret = "k".repeat(32);
    for args in [&["serve"][..], &["migrate"], &["audit", "--coupon", "1"]] {
        let (ok, stderr) = in_production(args, Some(&secret)).await;
        assert!(!ok, "{args:?} started");
        assert!(stderr.contains("sslmode=verify-full"), "{args:?}: {stderr}");
        assert!(stderr.contains("APP_DATABASE__ALLOW_PLAINTEXT"), "{stderr}");
    }
}

#[tokio::test]
async fn serve_runs_with_a_login_that_may_only_read_and_write_rows() {
    // Arrange: the owner's login migrates; the service gets a login with DML rights only.
    let owner = isolated_settings();
    let _cleanup_as_owner = Isolation::of(&owner);
    let (migrated, out) = run_command(&owner, &["migrate"]).await;
    assert!(migrated, "{out}");
    let db = owner.database.pool().await.unwrap();
    let database = owner.database.connect_options().unwrap();
    let database = database.get_database().unwrap();
    let role = format!("fcfs_test_dml_{}", uuid::Uuid::new_v4().simple());
    for grant in [
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT CONNECT ON DATABASE {database} TO {role}"),
        format!("GRANT USAGE ON SCHEMA public TO {role}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"),
        format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}"),
    ] {
        sqlx::query(&grant).execute(&db).await.unwrap();
    }
    let mut settings = owner.clone();
    let url = owner
        .database
        .url
        .expose_secret()
        .replacen("postgres@", &format!("{role}@"), 1);
    assert_ne!(url, owner.database.url.expose_secret(), "{url}");
    settings.database.url = url.into();
    settings.database.migrate = false;

    // Act: the whole pipeline on that login.
    let app = start(settings).await;
    let coupon = app.create_stock(3).await;
    let statuses = app.apply_all(coupon, 1..=5, 5).await;

    // Assert: it creates, admits, persists; and the login could not have changed the schema.
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::ACCEPTED)
            .count(),
        3
    );
    app.wait_for_rows(coupon, 3).await;
    let refused = sqlx::query("CREATE TABLE not_allowed (id int)")
        .execute(&app.db)
        .await;
    assert!(
        refused.is_err(),
        "the service's login can change the schema"
    );
}

#[tokio::test]
async fn librdkafka_properties_pass_through_and_a_bad_one_stops_the_start_by_name() {
    let secret = "s".repeat(32);
    let serve_with = |name: &'static str, value: &'static str| {
        let secret = secret.clone();
        async move {
            let output = Command::new(env!("CARGO_BIN_EXE_fcfs-coupon"))
                .arg("serve")
                .env("APP_AUTH__JWT_SECRET", secret)
                .env("APP_HTTP__ADDR", "127.0.0.1:0")
                .env("APP_OPS__ADDR", "127.0.0.1:0")
                .env(name, value)
                .output()
                .await
                .unwrap();
            (
                output.status.success(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
    };
    let (ok, stderr) = serve_with("APP_KAFKA__PROPERTIES__NOT_A_PROPERTY", "1").await;
    assert!(!ok);
    assert!(stderr.contains("not.a.property"), "{stderr}");
    let (ok, stderr) = serve_with("APP_KAFKA__PROPERTIES__ACKS", "1").await;
    assert!(!ok);
    assert!(stderr.contains("acks is set by the service"), "{stderr}");
    // A known property reaches librdkafka, which refuses a value it cannot take, by name.
    let (ok, stderr) =
        serve_with("APP_KAFKA__PROPERTIES__SECURITY_PROTOCOL", "carrier_pigeon").await;
    assert!(!ok);
    assert!(stderr.contains("security.protocol"), "{stderr}");
}

#[tokio::test]
async fn check_config_lists_every_refusal_at_once_and_prints_no_secret() {
    // Arrange: production with a short secret, a plaintext-capable database URL, and a Kafka
    // password among the librdkafka properties.
    let run = |extra: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fcfs-coupon"));
        command
            .arg("check-config")
            .env("APP_ENV", "production")
            .env("APP_KAFKA__PROPERTIES__SASL_PASSWORD", "hunter22-kafka")
            .envs(extra.iter().copied());
        async move { command.output().await.expect("the binary runs") }
    };

    // Act
    let refused = run(&[("APP_AUTH__JWT_SECRET", "short-s3cret")]).await;
    let fine = run(&[
        (
            "APP_AUTH__JWT_SECRET",
            "a-production-secret-of-at-least-32-bytes!",
        ),
        ("APP_DATABASE__ALLOW_PLAINTEXT", "true"),
        ("APP_FAIRNESS__ENABLED", "false"),
    ])
    .await;

    // Assert: both refusals named, exit 1; nothing secret printed; once fixed, exit 0 with
    // production's warnings.
    assert!(!refused.status.success());
    let printed = String::from_utf8_lossy(&refused.stdout);
    assert!(
        printed.contains("production needs at least 32"),
        "{printed}"
    );
    assert!(printed.contains("sslmode=verify-full"), "{printed}");
    for secret in ["short-s3cret", "hunter22-kafka"] {
        assert!(!printed.contains(secret), "{secret} printed");
    }
    let printed = String::from_utf8_lossy(&fine.stdout);
    assert!(fine.status.success(), "{printed}");
    assert!(
        printed.contains("refusals (serve would not start): none"),
        "{printed}"
    );
    assert!(printed.contains("APP_REDIS__ACK_REPLICAS=0"), "{printed}");
    assert!(
        printed.contains("APP_DATABASE__ALLOW_PLAINTEXT=true"),
        "{printed}"
    );
    assert!(!printed.contains("production-secret"), "the secret printed");
}

#[tokio::test]
async fn every_setting_readme_names_is_one_the_service_knows() {
    // README is what operators configure from: a name it gives that the service does not know
    // would be refused at start (or, worse, once was silently ignored).
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut names: Vec<&str> = readme
        .split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .filter(|w| w.len() > 4 && w.starts_with("APP_") && !w.ends_with('_'))
        // Free-form librdkafka properties; the file option; the deliberate typo of the example.
        .filter(|w| !w.starts_with("APP_KAFKA__PROPERTIES__"))
        .filter(|w| !["APP_CONFIG_FILE", "APP_AUTH__AUDIANCE"].contains(w))
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() > 30, "{names:?}");
    for name in names {
        let output = Command::new(env!("CARGO_BIN_EXE_fcfs-coupon"))
            .arg("check-config")
            .env("APP_ENV", "development")
            .env(name, "1")
            .output()
            .await
            .unwrap();
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(
            !said.contains("is not a setting"),
            "README names {name}: {said}"
        );
    }
}
