//! TLS to PostgreSQL, Redis and Kafka with a certificate authority the test makes: with the
//! right CA the pipeline runs over it; with another CA the connection is refused, with a clear
//! error. And Kafka's SASL login: the right password carries the pipeline, a wrong one is refused.

use std::time::Duration;

use fcfs_coupon::configuration::RedisMode;
use fcfs_coupon::startup::Application;
use reqwest::StatusCode;
use secrecy::ExposeSecret;

use crate::helpers::{
    assert_problem, isolated_settings, spawn_app_with, start, DurableBroker, KeyDir,
    PrivateCluster, PrivatePostgres, PrivateRedis, TlsSentinel, ALL_ROLES,
};

/// A CA, a server certificate it signed (for localhost and 127.0.0.1), and another CA.
struct Pki {
    _keys: KeyDir,
    ca: std::path::PathBuf,
    stranger: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

impl Pki {
    fn new() -> Self {
        let keys = KeyDir::new();
        let (ca, stranger) = (keys.ca("ca"), keys.ca("stranger"));
        let (cert, key) = keys.server("ca", "server");
        Self {
            _keys: keys,
            ca,
            stranger,
            cert,
            key,
        }
    }
}

#[tokio::test]
async fn postgres_over_verified_tls_carries_the_pipeline_and_a_wrong_ca_is_refused() {
    // Arrange: a CA, a server certificate for localhost, a PostgreSQL serving it; another CA.
    let pki = Pki::new();
    let (ca, stranger, cert, key) = (&pki.ca, &pki.stranger, &pki.cert, &pki.key);
    let postgres = PrivatePostgres::with_tls(cert, key).await;
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
    wrong.database.url = url(stranger).into();
    let refused = wrong.database.create_if_missing().await.unwrap_err();
    let refused = format!("{refused:?}");
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
    eprintln!("a wrong CA: {refused}");

    // The right CA: every pool of the service speaks TLS, and the pipeline runs on it.
    settings.database.url = url(ca).into();
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
    let pki = Pki::new();
    let (ca, stranger, cert, key) = (&pki.ca, &pki.stranger, &pki.cert, &pki.key);
    let redis = PrivateRedis::with_tls(cert, key, ca).await;
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

/// A connection straight to a TLS-only server, trusting `ca`: what the gate wrote, read back.
async fn tls_connection(port: u16, ca: &std::path::Path) -> redis::aio::MultiplexedConnection {
    let certificates = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(std::fs::read(ca).unwrap()),
    };
    redis::Client::build_with_tls(format!("rediss://127.0.0.1:{port}"), certificates)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Sentinel or cluster mode over TLS to `nodes`, trusting `ca`. The URL gives only the scheme
/// (and would give the credentials): the sentinel, or the cluster, names the servers.
fn over_tls(
    s: &mut fcfs_coupon::configuration::Settings,
    mode: fcfs_coupon::configuration::RedisMode,
    nodes: String,
    ca: &std::path::Path,
) {
    s.redis.mode = mode;
    s.redis.nodes = nodes;
    s.redis.url = "rediss://127.0.0.1".to_owned().into();
    s.redis.ca_file = Some(ca.to_owned());
    s.redis.timeout_ms = 2_000;
    s.rate_limit.per_user_per_sec = 0;
}

#[tokio::test]
async fn sentinel_mode_over_tls_reaches_sentinel_and_master_verified_and_a_wrong_ca_is_refused() {
    let pki = Pki::new();
    let (ca, stranger, cert, key) = (&pki.ca, &pki.stranger, &pki.cert, &pki.key);
    let set = TlsSentinel::start(cert, key, ca).await;
    let nodes = format!("127.0.0.1:{}", set.port);
    let sentinel_mode = |s: &mut fcfs_coupon::configuration::Settings, ca: &std::path::Path| {
        over_tls(s, RedisMode::Sentinel, nodes.clone(), ca)
    };

    // The right CA: the sentinel names the master, and the gate admits over TLS to it.
    let app = spawn_app_with(|s| sentinel_mode(s, ca)).await;
    let coupon = app.create_stock(2).await;
    assert_eq!(app.apply(coupon, 1).await.status(), StatusCode::ACCEPTED);
    assert_eq!(app.position_status(coupon, 1).await, "ADMITTED");
    let mut direct = tls_connection(set.master.port, ca).await;
    let queued: i64 = redis::cmd("ZCARD")
        .arg(app.keys(coupon).queue)
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(queued, 1, "the admission is on the TLS master");

    // Another CA: nothing connects; clients get 503, never a plaintext fallback.
    let wrong = spawn_app_with(|s| sentinel_mode(s, stranger)).await;
    let refused = format!("{:?}", wrong.gate.ping().await.unwrap_err());
    eprintln!("a wrong CA: {refused}");
    assert_problem(
        wrong.apply(coupon, 2).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
    )
    .await;
}

#[tokio::test]
async fn cluster_mode_over_tls_admits_on_verified_masters_and_a_wrong_ca_is_refused() {
    let pki = Pki::new();
    let (ca, stranger, cert, key) = (&pki.ca, &pki.stranger, &pki.cert, &pki.key);
    let cluster = PrivateCluster::with_tls(cert, key, ca).await;
    let cluster_mode = |s: &mut fcfs_coupon::configuration::Settings, ca: &std::path::Path| {
        over_tls(s, RedisMode::Cluster, cluster.seeds(), ca)
    };

    // The right CA: events on every master, each admitting over TLS.
    let app = spawn_app_with(|s| cluster_mode(s, ca)).await;
    let mut coupons = Vec::new();
    for _ in 0..6 {
        let coupon = app.create_stock(2).await;
        assert_eq!(app.apply(coupon, 1).await.status(), StatusCode::ACCEPTED);
        assert_eq!(app.position_status(coupon, 1).await, "ADMITTED");
        coupons.push(coupon);
    }

    // Six events on three masters: each master holds some, reached over TLS.
    for node in &cluster.nodes {
        let mut conn = tls_connection(node.port, ca).await;
        let keys: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
        eprintln!("master {}: {keys} keys", node.port);
        assert!(keys > 0, "master {} holds nothing", node.port);
    }

    // Another CA: the gate reaches no node (the service then answers 503, as above).
    let mut wrong = isolated_settings();
    cluster_mode(&mut wrong, stranger);
    let refused = wrong.redis.gate().unwrap().ping().await.unwrap_err();
    eprintln!("a wrong CA: {refused:?}");
    assert!(matches!(
        refused,
        fcfs_coupon::gate::GateError::Unavailable(_)
    ));
    assert_eq!(coupons.len(), 6);
}

#[tokio::test]
async fn kafka_over_tls_carries_the_pipeline_and_a_wrong_ca_is_refused() {
    // Arrange: a broker reachable only through a TLS terminator (it advertises the TLS port),
    // a CA that signed the terminator's certificate, and another CA.
    let pki = Pki::new();
    let (ca, stranger, cert, key) = (&pki.ca, &pki.stranger, &pki.cert, &pki.key);
    let (_broker, tls) = DurableBroker::behind_tls(cert, key).await;
    let over_tls = |root: &std::path::Path| {
        let mut settings = isolated_settings();
        settings.kafka.brokers = format!("127.0.0.1:{}", tls.port);
        let properties = &mut settings.kafka.properties;
        properties.insert("security.protocol".into(), "SSL".into());
        properties.insert("ssl.ca.location".into(), root.display().to_string());
        settings
    };

    // The right CA: the issuer publishes over TLS and the consumer reads it back.
    let app = start(over_tls(ca)).await;
    let coupon = app.create_stock(3).await;
    for user in 1..=3 {
        assert_eq!(app.apply(coupon, user).await.status(), StatusCode::ACCEPTED);
    }
    app.wait_for_rows(coupon, 3).await;
    let positions: Vec<i32> = app.issued_rows(coupon).await.iter().map(|r| r.1).collect();
    assert_eq!(positions, [1, 2, 3]);

    // Another CA: the start fails.
    refused_at_start(&over_tls(stranger), "a certificate from another CA").await;
}

#[tokio::test]
async fn kafka_with_sasl_scram_carries_the_pipeline_and_a_wrong_password_is_refused() {
    // Arrange: a broker that requires a SASL login, with one SCRAM-SHA-512 user.
    let broker = DurableBroker::with_user("coupon-app", "s3cret-scram").await;
    let logged_in_as = |password: &str| {
        let mut settings = isolated_settings();
        settings.kafka.brokers = broker.address();
        let properties = &mut settings.kafka.properties;
        properties.insert("security.protocol".into(), "SASL_PLAINTEXT".into());
        properties.insert("sasl.mechanism".into(), "SCRAM-SHA-512".into());
        properties.insert("sasl.username".into(), "coupon-app".into());
        properties.insert("sasl.password".into(), password.into());
        settings
    };

    // The right password: the issuer publishes and the consumer reads back.
    let app = start(logged_in_as("s3cret-scram")).await;
    let coupon = app.create_stock(3).await;
    for user in 1..=3 {
        assert_eq!(app.apply(coupon, user).await.status(), StatusCode::ACCEPTED);
    }
    app.wait_for_rows(coupon, 3).await;

    // A wrong one: the start fails.
    refused_at_start(&logged_in_as("not-the-password"), "a wrong password").await;
}

/// The service cannot start on `settings`: creating the topics never gets past the broker's
/// handshake or login (librdkafka retries until the admin call times out).
async fn refused_at_start(settings: &fcfs_coupon::configuration::Settings, what: &str) {
    let refused = tokio::time::timeout(
        Duration::from_secs(90),
        Application::build(settings, &ALL_ROLES),
    )
    .await
    .expect("the start gives up")
    .err()
    .unwrap_or_else(|| panic!("{what} is refused"));
    eprintln!("{what}: {refused:#}");
    assert!(format!("{refused:#}").contains("creating Kafka topics"));
}
