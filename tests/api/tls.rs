//! TLS to PostgreSQL and Redis with a certificate authority the test makes: with the right CA
//! the pipeline runs over it; with another CA the connection is refused, with a clear error.

use reqwest::StatusCode;
use secrecy::ExposeSecret;

use crate::helpers::{
    assert_problem, isolated_settings, spawn_app_with, start, KeyDir, PrivatePostgres, PrivateRedis,
};

#[tokio::test]
async fn postgres_over_verified_tls_carries_the_pipeline_and_a_wrong_ca_is_refused() {
    // Arrange: a CA, a server certificate for localhost, a PostgreSQL serving it; another CA.
    let keys = KeyDir::new();
    let ca = keys.ca("ca");
    let stranger = keys.ca("stranger");
    let (cert, key) = keys.server("ca", "server");
    let postgres = PrivatePostgres::with_tls(&cert, &key).await;
    let mut settings = isolated_settings();
    let database = settings
        .database
        .url
        .expose_secret()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let url = |root: &std::path::Path| {
        format!(
            "postgres://postgres@localhost:{}/{database}?sslmode=verify-full&sslrootcert={}",
            postgres.port,
            root.display()
        )
    };

    // Act + Assert: another CA is refused at start, naming the certificate.
    let mut wrong = settings.clone();
    wrong.database.url = url(&stranger).into();
    let refused = wrong.database.create_if_missing().await.unwrap_err();
    let refused = format!("{refused:?}");
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
    eprintln!("a wrong CA: {refused}");

    // The right CA: every pool of the service speaks TLS, and the pipeline runs on it.
    settings.database.url = url(&ca).into();
    let app = start(settings).await;
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(ssl, "the connection is encrypted");
    let coupon = app.create_stock(2).await;
    assert_eq!(app.apply(coupon, 1).await.status(), StatusCode::ACCEPTED);
    app.wait_for_rows(coupon, 1).await;
    let plain: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.client_port IS NOT NULL AND NOT s.ssl",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(plain, 0, "no connection without TLS");
}

#[tokio::test]
async fn redis_over_tls_serves_the_gate_and_a_wrong_ca_is_refused() {
    let keys = KeyDir::new();
    let ca = keys.ca("ca");
    let stranger = keys.ca("stranger");
    let (cert, key) = keys.server("ca", "server");
    let redis = PrivateRedis::with_tls(&cert, &key, &ca).await;
    let url = format!("rediss://localhost:{}", redis.port);

    // The right CA: events are created and applied for through the TLS connection.
    let app = spawn_app_with(|s| {
        s.redis.url = url.clone().into();
        s.redis.ca_file = Some(ca.clone());
    })
    .await;
    let coupon = app.create_stock(2).await;
    assert_eq!(app.apply(coupon, 1).await.status(), StatusCode::ACCEPTED);
    assert_eq!(app.position_status(coupon, 1).await, "ADMITTED");

    // Another CA: the gate cannot connect; the cause names the certificate, clients get 503.
    let wrong = spawn_app_with(|s| {
        s.redis.url = url.clone().into();
        s.redis.ca_file = Some(stranger.clone());
        s.redis.timeout_ms = 1_000;
    })
    .await;
    let refused = format!("{:?}", wrong.gate.ping().await.unwrap_err());
    assert!(
        refused.contains("UnknownIssuer") || refused.to_lowercase().contains("certificate"),
        "{refused}"
    );
    eprintln!("a wrong CA: {refused}");
    assert_problem(
        wrong.apply(coupon, 2).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
    )
    .await;
}
