use std::collections::BTreeMap;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use fcfs_coupon::auth::TokenKeys;
use fcfs_coupon::configuration::{LogSettings, RedisMode, Settings};
use fcfs_coupon::domain::{CouponId, UserId};
use fcfs_coupon::gate::{CouponKeys, Gate, RedisConnection};
use fcfs_coupon::issuer::Issuer;
use fcfs_coupon::startup::{Application, Role};
use fcfs_coupon::telemetry;
use reqwest::{Response, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

mod broker;
mod browser;
mod census;
mod certs;
mod cluster;
mod failover;
mod isolation;
mod kafka;
mod pg_statements;
mod postgres_server;
mod process;
mod proxy;
mod redis_server;
mod sentinel;
mod strict_json;
mod stunnel;
pub use broker::DurableBroker;
pub use browser::{artifact, browser_script};
pub use census::counts_unlike_statuses;
pub use certs::KeyDir;
pub use cluster::PrivateCluster;
pub use failover::{assert_every_ticket_kept, assert_told_is_persisted, until_admitted};
pub use isolation::Isolation;
pub use kafka::{committed_total, produce_raw, topic_messages};
pub use postgres_server::PrivatePostgres;
pub use process::{free_port, run_command, ServiceProcess};
pub use proxy::TcpProxy;
pub use redis_server::{until_redis_answers, PrivateRedis};
pub use sentinel::{SentinelSet, TlsSentinel};
pub use strict_json::parse_strict;
pub use stunnel::Stunnel;

/// A cron expression that never fires in a test's lifetime: the test runs issuer ticks itself.
/// Two ticks, a year apart, so it has a period (what `retryAfterMs` tells pollers).
pub const MANUAL: &str = "0 0 0 1 1 * 2099-2100";

pub const ALL_ROLES: [Role; 3] = [Role::Api, Role::Issuer, Role::Consumer];

pub struct TestApp {
    pub address: String,
    /// The ops port: `/metrics`, `/health/*`.
    pub ops_address: String,
    pub client: reqwest::Client,
    pub settings: Settings,
    pub tokens: TokenKeys,
    pub db: PgPool,
    /// Straight to the real Redis (not through any proxy the app may be using).
    pub redis: RedisConnection,
    /// The gate, as the service sees it (same prefix), for driving the pipeline by hand.
    pub gate: Gate,
    issuer: Option<Issuer>,
    shutdown: CancellationToken,
    /// The test's database, topics and keys, removed when its last `TestApp` is gone.
    isolation: Arc<Isolation>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// `host:port` of the shared Redis, as the scripts configured it (`APP_REDIS__URL`).
pub fn redis_address() -> String {
    let url = Settings::load(None).unwrap().redis.url;
    let url = url.expose_secret();
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    rest.split('/').next().unwrap().to_owned()
}

/// `host:port` of the shared PostgreSQL, as the scripts configured it (`APP_DATABASE__URL`).
pub fn postgres_address() -> String {
    let url = Settings::load(None).unwrap().database.url;
    let url = url.expose_secret();
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    rest.split('/').next().unwrap().to_owned()
}

/// `settings`' database URL, reached through the proxy at `port` instead.
pub fn through_proxy(settings: &mut Settings, port: u16) {
    let url = settings.database.url.expose_secret().replacen(
        &postgres_address(),
        &format!("127.0.0.1:{port}"),
        1,
    );
    settings.database.url = url.into();
}

/// `settings`' database URL in plaintext (`sslmode=disable`): a proxy can read its traffic.
pub fn without_tls(settings: &mut Settings) {
    let mut url = reqwest::Url::parse(settings.database.url.expose_secret()).unwrap();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(name, _)| name != "sslmode")
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair("sslmode", "disable");
    settings.database.url = url.to_string().into();
}

/// Settings isolated for one test: its own database, Redis prefix and secret; port 0.
pub fn isolated_settings() -> Settings {
    static TRACING: Once = Once::new();
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            telemetry::init(&LogSettings::default());
        }
    });
    let mut settings = Settings::load(None).expect("configuration loads");
    let id = uuid::Uuid::new_v4().simple().to_string();
    let base = settings.database.url.expose_secret().to_owned();
    let server = base
        .rsplit_once('/')
        .map_or(base.as_str(), |(server, _)| server);
    settings.database.url = format!("{server}/fcfs_test_{id}").into();
    settings.database.max_connections = 5;
    settings.redis.key_prefix = format!("test-{id}");
    settings.http.addr = "127.0.0.1:0".into();
    settings.ops.addr = "127.0.0.1:0".into();
    settings.auth.jwt_secret = Some(format!("test-secret-{id}").into());
    settings.kafka.topic = format!("test-{id}");
    settings.kafka.group_id = format!("test-{id}");
    settings.kafka.partitions = 3;
    // Every test client comes from 127.0.0.1; the address limit has a test of its own.
    settings.rate_limit.per_address_per_sec = 0;
    settings
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = isolated_settings();
    customize(&mut settings);
    start(settings).await
}

/// An app that reaches Redis only through a proxy the test can cut (a call then fails within
/// 500 ms).
pub async fn spawn_app_behind_redis_proxy(
    customize: impl FnOnce(&mut Settings),
) -> (TcpProxy, TestApp) {
    let proxy = TcpProxy::start(redis_address()).await;
    let app = spawn_app_with(|s| {
        s.redis.url = format!("redis://{}", proxy.address()).into();
        s.redis.timeout_ms = 500;
        customize(s);
    })
    .await;
    (proxy, app)
}

/// Starts one instance of the service, with every role, on `settings`. Instances started on
/// the same settings share Redis, the database, the topic and the consumer group.
pub async fn start(settings: Settings) -> TestApp {
    start_roles(settings, &ALL_ROLES).await
}

/// One instance with only `roles` (it must include the API).
pub async fn start_roles(settings: Settings, roles: &[Role]) -> TestApp {
    let app = Application::build(&settings, roles)
        .await
        .expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port().unwrap());
    let issuer = app.issuer();
    let shutdown = CancellationToken::new();
    let ops_address = format!("http://127.0.0.1:{}", app.ops_port());
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp::connect(settings, (address, ops_address), issuer, shutdown).await
}

/// A test handle on a service running elsewhere (another process).
pub async fn observe(settings: Settings, process: &ServiceProcess) -> TestApp {
    let addresses = (process.address.clone(), process.ops_address.clone());
    TestApp::connect(settings, addresses, None, CancellationToken::new()).await
}

impl TestApp {
    async fn connect(
        settings: Settings,
        (address, ops_address): (String, String),
        issuer: Option<Issuer>,
        shutdown: CancellationToken,
    ) -> Self {
        let isolation = Isolation::of(&settings);
        settings
            .database
            .create_if_missing()
            .await
            .expect("test database");
        let db = settings.database.pool().await.expect("test database");
        // Assertions go to the real Redis, even when the service is given a proxy.
        // A cluster is reached directly (its nodes name each other, so no proxy stands in).
        let real = match settings.redis.mode {
            RedisMode::Cluster => settings.redis.clone(),
            _ => Settings::load(None).unwrap().redis,
        };
        let redis = real.connect().await.expect("Redis for assertions");
        let gate = settings.redis.gate().unwrap();
        TestApp {
            address,
            ops_address,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .build()
                .unwrap(),
            tokens: TokenKeys::new(&settings.auth.secret()),
            settings,
            db,
            redis,
            gate,
            issuer,
            shutdown,
            isolation,
        }
    }

    /// Deletes every key of the test's prefix, as a Redis restart without persistence would.
    pub async fn wipe_redis(&self) {
        let mut conn = self.redis.clone();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.settings.redis.key_prefix))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(!keys.is_empty());
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(self.redis_state().await.is_empty());
    }

    /// Applies until the answer is final, as a patient client would: a 503 (with its
    /// `Retry-After`, asserted) is asked again. Any other answer is returned with the position
    /// told and how many 503s came first.
    pub async fn apply_through_outage(&self, coupon: i64, user: i64, within: Duration) -> Outcome {
        let deadline = Instant::now() + within;
        let mut unavailable = 0;
        loop {
            let asked = Instant::now();
            let resp = self.apply(coupon, user).await;
            let status = resp.status();
            if status != StatusCode::SERVICE_UNAVAILABLE {
                let body: Value = resp.json().await.unwrap_or_default();
                return Outcome {
                    user,
                    status,
                    position: body["position"].as_i64().map(|p| p as i32),
                    unavailable,
                    asked,
                    answered: Instant::now(),
                };
            }
            assert!(
                resp.headers().contains_key("retry-after"),
                "a 503 says when to come back"
            );
            unavailable += 1;
            assert!(
                Instant::now() < deadline,
                "user {user} still answered 503 after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// This instance's batch issuer, for running ticks by hand.
    pub fn issuer(&self) -> &Issuer {
        self.issuer
            .as_ref()
            .expect("the service runs in this process")
    }

    /// Stops the in-process service (as SIGTERM would) and waits until its port is closed.
    /// Keep what it returns while starting another instance on the same settings: the test's
    /// database and keys stay as long as it lives.
    #[must_use = "the test's database is dropped with the last handle on it"]
    pub async fn stop(self) -> Arc<Isolation> {
        self.shutdown.cancel();
        let isolation = self.isolation.clone();
        let port = self.address.rsplit(':').next().unwrap().to_owned();
        eventually("the service to stop", Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
                .await
                .is_err()
                .then_some(())
        })
        .await;
        isolation
    }
}

/// A final answer to an application (see [`TestApp::apply_through_outage`]).
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub user: i64,
    pub status: StatusCode,
    pub position: Option<i32>,
    /// 503s answered before it.
    pub unavailable: u32,
    /// When the request that got this answer was sent, and when the answer came.
    pub asked: Instant,
    pub answered: Instant,
}

/// The users admitted (202 or 200) with the position they were told.
pub fn told(outcomes: &[Outcome]) -> BTreeMap<i64, i32> {
    outcomes
        .iter()
        .filter(|o| matches!(o.status, StatusCode::ACCEPTED | StatusCode::OK))
        .map(|o| {
            (
                o.user,
                o.position.expect("an admission carries its position"),
            )
        })
        .collect()
}

/// Every answer is final and one a client expects of a running event: 200, 202 or 410 (never
/// 404 for an event that exists, never a 5xx).
pub fn assert_final(outcomes: &[Outcome]) {
    for o in outcomes {
        assert!(
            matches!(
                o.status,
                StatusCode::OK | StatusCode::ACCEPTED | StatusCode::GONE
            ),
            "user {} answered {}",
            o.user,
            o.status
        );
    }
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub async fn until_listening(what: &str, port: u16, within: Duration) {
    eventually(what, within, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await;
}

/// Tokens a bucket refilled `per_sec` a second may have gained in `elapsed`: what a rate-limit
/// test allows beyond the burst, so that the time its requests took (a busy machine) cannot
/// decide its verdict. GCRA lets at most `burst + refills` through in `elapsed`.
pub fn refills(per_sec: u32, elapsed: Duration) -> usize {
    (elapsed.as_secs_f64() * f64::from(per_sec)).floor() as usize
}

/// Polls `check` every 50 ms until it returns `Some`, failing the test after `within`; prints
/// how long it took.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    let deadline = started + within;
    loop {
        if let Some(value) = check().await {
            // Shown with --nocapture or when the test fails: how close a deadline is to the
            // time the condition really takes.
            eprintln!(
                "waited {:.1?} (of {within:?}) for {what}",
                started.elapsed()
            );
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl TestApp {
    pub fn user_token(&self, user: i64) -> String {
        self.tokens
            .mint(UserId::new(user).unwrap(), false, Duration::from_secs(3600))
            .unwrap()
    }

    pub fn admin_token(&self) -> String {
        self.tokens
            .mint(UserId::new(1).unwrap(), true, Duration::from_secs(3600))
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A GET on the ops port.
    pub async fn ops_get(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.ops_address))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    /// `GET path` as `user`, the JSON answer.
    pub async fn get_json_as(&self, path: &str, user: i64) -> Value {
        self.client
            .get(self.url(path))
            .bearer_auth(self.user_token(user))
            .send()
            .await
            .expect("request sent")
            .json()
            .await
            .expect("a JSON answer")
    }

    pub async fn post_coupon(&self, token: Option<&str>, body: &Value) -> Response {
        let mut req = self.client.post(self.url("/coupons")).json(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("request sent")
    }

    /// Creates an event through the admin API and returns its id.
    pub async fn create_coupon(&self, body: Value) -> i64 {
        let resp = self.post_coupon(Some(&self.admin_token()), &body).await;
        assert_eq!(
            resp.status(),
            StatusCode::CREATED,
            "{}",
            resp.text().await.unwrap()
        );
        resp.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
    }

    pub async fn create_stock(&self, stock: u32) -> i64 {
        self.create_coupon(json!({"name": "Flash sale", "stock": stock}))
            .await
    }

    pub async fn apply_with(&self, coupon: &str, token: Option<&str>) -> Response {
        let mut req = self
            .client
            .post(self.url(&format!("/coupons/{coupon}/issue")));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("request sent")
    }

    pub async fn apply(&self, coupon: i64, user: i64) -> Response {
        self.apply_with(&coupon.to_string(), Some(&self.user_token(user)))
            .await
    }

    /// Every user applies once, `concurrency` at a time; the statuses, in no particular order.
    pub async fn apply_all(
        &self,
        coupon: i64,
        users: impl IntoIterator<Item = i64>,
        concurrency: usize,
    ) -> Vec<StatusCode> {
        use futures::{stream, StreamExt};
        stream::iter(users)
            .map(|user| async move { self.apply(coupon, user).await.status() })
            .buffer_unordered(concurrency)
            .collect()
            .await
    }

    pub async fn position(&self, coupon: i64, user: i64) -> Response {
        self.client
            .get(self.url(&format!("/coupons/{coupon}/position")))
            .bearer_auth(self.user_token(user))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get_coupon(&self, coupon: &str) -> Response {
        self.get(&format!("/coupons/{coupon}")).await
    }

    /// The event's view read after this call began. The service serves a copy up to a second
    /// old, dated by `asOf`: asked until the copy is newer than the question.
    pub async fn coupon_json(&self, coupon: i64) -> Value {
        let asked = chrono::Utc::now();
        eventually(
            "an event view read after it was asked for",
            Duration::from_secs(10),
            || async {
                let resp = self.get_coupon(&coupon.to_string()).await;
                assert_eq!(resp.status(), StatusCode::OK);
                let view: Value = resp.json().await.unwrap();
                let as_of = view["asOf"].as_str().expect("asOf in the view");
                let as_of = chrono::DateTime::parse_from_rfc3339(as_of).expect("asOf is RFC 3339");
                (as_of >= asked).then_some(view)
            },
        )
        .await
    }

    /// The coupon's Redis keys, named as the service names them.
    pub fn keys(&self, coupon: i64) -> CouponKeys {
        self.gate.keys(CouponId::new(coupon).unwrap())
    }

    pub fn queue_key(&self, coupon: i64) -> String {
        self.keys(coupon).queue
    }

    pub fn pending_key(&self, coupon: i64) -> String {
        self.keys(coupon).pending
    }

    /// The admission queue in score order: (user, score).
    pub async fn queue(&self, coupon: i64) -> Vec<(i64, f64)> {
        redis::cmd("ZRANGE")
            .arg(self.queue_key(coupon))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut self.redis.clone())
            .await
            .unwrap()
    }

    /// The admitted users in arrival order.
    pub async fn admitted(&self, coupon: i64) -> Vec<i64> {
        self.queue(coupon)
            .await
            .into_iter()
            .map(|(u, _)| u)
            .collect()
    }

    /// Every key under this test's prefix with its serialised value: equal snapshots mean
    /// Redis did not change.
    pub async fn redis_state(&self) -> BTreeMap<String, Vec<u8>> {
        let mut conn = self.redis.clone();
        let pattern = format!("{}:*", self.settings.redis.key_prefix);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut state = BTreeMap::new();
        for key in keys {
            let dump: Vec<u8> = redis::cmd("DUMP")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            state.insert(key, dump);
        }
        state
    }

    /// The persisted issues of a coupon in position order: (user, position).
    pub async fn issued_rows(&self, coupon: i64) -> Vec<(i64, i32)> {
        sqlx::query_as(
            "SELECT user_id, position FROM coupon_issue WHERE coupon_id = $1 ORDER BY position",
        )
        .bind(coupon)
        .fetch_all(&self.db)
        .await
        .unwrap()
    }

    pub async fn issued_count(&self, coupon: i64) -> i32 {
        sqlx::query_scalar("SELECT issued_count FROM coupon WHERE id = $1")
            .bind(coupon)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// Waits until the coupon has exactly `rows` persisted issues.
    pub async fn wait_for_rows(&self, coupon: i64, rows: usize) {
        eventually(
            &format!("{rows} rows persisted"),
            Duration::from_secs(60),
            || async { (self.issued_rows(coupon).await.len() == rows).then_some(()) },
        )
        .await
    }

    pub async fn position_status(&self, coupon: i64, user: i64) -> String {
        let body: Value = self.position(coupon, user).await.json().await.unwrap();
        body["status"].as_str().unwrap().to_owned()
    }

    /// One series' value from `/metrics` (`name{labels}` exactly as exposed); 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.ops_get("/metrics").await.text().await.unwrap();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    }

    pub async fn failed_events(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM failed_event")
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// The event's `applications` counter in Redis (every answer the gate gave).
    pub async fn applications(&self, coupon: i64) -> u64 {
        redis::cmd("HGET")
            .arg(self.keys(coupon).meta)
            .arg("applications")
            .query_async::<Option<u64>>(&mut self.redis.clone())
            .await
            .unwrap()
            .unwrap_or_default()
    }

    /// Waits (a hang guard of 30 s) until the event's `applications` counter is `expected`:
    /// each instance adds what it answered once a second.
    pub async fn until_applications(&self, coupon: i64, expected: u64) {
        let what = format!("{expected} applications counted");
        eventually(&what, Duration::from_secs(30), || async {
            (self.applications(coupon).await == expected).then_some(())
        })
        .await;
    }

    /// The status hash: user → status.
    pub async fn statuses(&self, coupon: i64) -> BTreeMap<String, String> {
        redis::cmd("HGETALL")
            .arg(self.keys(coupon).status)
            .query_async(&mut self.redis.clone())
            .await
            .unwrap()
    }

    /// The census' per-status counts equal a full scan of the statuses (see
    /// [`counts_unlike_statuses`]), on a connection of its own: one opened before a proxy was
    /// pointed at another server would still read the old one.
    pub async fn assert_counted(&self, coupon: i64) {
        let keys = self.keys(coupon);
        let redis = self.settings.redis.connect().await.unwrap();
        let present: bool = redis::cmd("HEXISTS")
            .arg(&keys.meta)
            .arg("stock")
            .query_async(&mut redis.clone())
            .await
            .unwrap();
        assert!(present, "Redis holds the event whose counts are checked");
        assert_eq!(
            counts_unlike_statuses(&redis, &keys).await,
            Vec::<String>::new(),
            "the per-status counts against a full scan"
        );
    }

    /// Row counts of every table: equal snapshots mean PostgreSQL did not change.
    pub async fn db_state(&self) -> (i64, i64, i64) {
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM coupon), (SELECT count(*) FROM coupon_issue), \
             (SELECT count(*) FROM failed_event)",
        )
        .fetch_one(&self.db)
        .await
        .unwrap()
    }
}

/// What every fault test ends with, judged against PostgreSQL, Redis and the dead-letter topic
/// rather than the service's own view. Waits until PostgreSQL holds a row for every winner Redis
/// admitted, then checks: rows == admitted winners in the queue's order, positions exactly
/// 1..=n, issued_count == rows <= stock, every winner `ISSUED` (none `FAILED`), nothing in
/// `failed_event` or on the dead-letter topic, and an audit with no discrepancy.
/// Returns the persisted (user, position) rows.
pub async fn assert_settled(app: &TestApp, coupon: i64, stock: usize) -> Vec<(i64, i32)> {
    let rows = eventually(
        "every admitted winner persisted",
        Duration::from_secs(60),
        || async {
            let admitted = app.queue(coupon).await;
            let rows = app.issued_rows(coupon).await;
            (rows.len() == admitted.len()).then_some(rows)
        },
    )
    .await;
    let admitted = app.admitted(coupon).await;
    let positions: Vec<i32> = rows.iter().map(|(_, p)| *p).collect();
    assert_eq!(positions, (1..=rows.len() as i32).collect::<Vec<_>>());
    let in_order: Vec<i64> = rows.iter().map(|(u, _)| *u).collect();
    assert_eq!(in_order, admitted, "rows follow the admission order");
    assert!(rows.len() <= stock, "{} rows for stock {stock}", rows.len());
    assert_eq!(app.issued_count(coupon).await, rows.len() as i32);

    assert_eq!(
        app.failed_events().await,
        0,
        "messages set aside in failed_event"
    );
    let dead_letters = topic_messages(&app.settings, &app.settings.kafka.dead_letter_topic()).await;
    assert_eq!(dead_letters, 0, "messages on the dead-letter topic");
    let statuses = eventually("every winner ISSUED", Duration::from_secs(10), || async {
        let statuses = app.statuses(coupon).await;
        statuses.values().all(|s| s == "ISSUED").then_some(statuses)
    })
    .await;
    assert_eq!(statuses.len(), rows.len(), "a status per winner");
    app.assert_counted(coupon).await;

    let coupon_id = CouponId::new(coupon).unwrap();
    let report = eventually("a clean audit", Duration::from_secs(30), || async {
        let report = fcfs_coupon::ops::audit(&app.gate, &app.db, coupon_id)
            .await
            .unwrap()
            .unwrap();
        report.consistent.then_some(report)
    })
    .await;
    assert_eq!(report.database.rows, rows.len() as u64);
    assert_eq!(
        (report.redis.issued, report.redis.failed),
        (rows.len() as u64, 0)
    );
    rows
}

/// [`assert_settled`], and the persisted winners are exactly the users the service told they
/// were admitted (202, or 200 on a repeat), each at the position it was told.
pub async fn assert_settled_as_told(
    app: &TestApp,
    coupon: i64,
    stock: usize,
    told: &BTreeMap<i64, i32>,
) -> Vec<(i64, i32)> {
    let rows = assert_settled(app, coupon, stock).await;
    let persisted: BTreeMap<i64, i32> = rows.iter().copied().collect();
    assert_eq!(
        &persisted, told,
        "persisted winners differ from what clients were told"
    );
    rows
}

/// Asserts a problem+json error with the given status and code; returns the body.
pub async fn assert_problem(resp: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(resp.status(), status, "wrong status for expected {code}");
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/problem+json"),
        "content type was {content_type:?}"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    for field in ["type", "title", "detail"] {
        assert!(
            body[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field} missing: {body}"
        );
    }
    body
}

/// Ticks `issuer` every 200 ms until the handle is aborted (tests whose issuer runs by hand).
pub fn ticker(issuer: &fcfs_coupon::issuer::Issuer) -> tokio::task::JoinHandle<()> {
    let issuer = issuer.clone();
    tokio::spawn(async move {
        loop {
            let _ = issuer.run_once().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}
