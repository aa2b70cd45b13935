//! One typed configuration, layered: serde defaults, an optional TOML file, then `APP_…__…`
//! environment variables (`APP_REDIS__URL` sets `redis.url`).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

mod secret_files;

/// Used when `APP_AUTH__JWT_SECRET` is unset and `APP_ENV=development`, so a fresh clone runs;
/// startup warns loudly. Production refuses it.
pub const DEVELOPMENT_JWT_SECRET: &str = "fcfs-coupon-development-secret-do-not-use-in-production";
/// Signs rehearsal users' tokens in development (`scripts/rehearse.sh`); never in production.
pub const DEVELOPMENT_REHEARSAL_SECRET: &str =
    "fcfs-coupon-development-rehearsal-secret-not-for-production";

/// Secrets that have been public (in this repository's history or files): they protect nothing.
const KNOWN_SECRETS: &[&str] = &[
    DEVELOPMENT_JWT_SECRET,
    DEVELOPMENT_REHEARSAL_SECRET,
    "change-me-before-any-real-event",
];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `APP_ENV`: what the process may get away with (see [`Environment`]).
    pub env: Environment,
    pub http: HttpSettings,
    pub redis: RedisSettings,
    pub gate: GateSettings,
    pub database: DatabaseSettings,
    pub kafka: KafkaSettings,
    pub issuer: IssuerSettings,
    pub consumer: ConsumerSettings,
    pub rate_limit: RateLimitSettings,
    pub auth: AuthSettings,
    pub log: LogSettings,
    pub ops: OpsSettings,
    pub fairness: FairnessSettings,
}

/// Verifiable fairness: each event's admissions in a signed, append-only Merkle log.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FairnessSettings {
    /// Whether the log is built and served.
    pub enabled: bool,
    /// The Ed25519 key that signs checkpoints, in signed-note form (`PRIVATE+KEY+…`;
    /// `fcfs-coupon fairness-key` writes one). Production requires it when the log is on.
    pub signing_key_file: Option<std::path::PathBuf>,
}

impl Default for FairnessSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            signing_key_file: None,
        }
    }
}

impl FairnessSettings {
    /// The key that signs checkpoints, `None` when the log is off; in development without a
    /// file, the built-in development key.
    pub fn key(&self, env: Environment) -> anyhow::Result<Option<crate::fairness::LogKey>> {
        use crate::fairness::LogKey;
        if !self.enabled {
            return Ok(None);
        }
        let key = match &self.signing_key_file {
            Some(path) => LogKey::from_file(path)?,
            None if env == Environment::Development => LogKey::development(),
            None => anyhow::bail!(
                "APP_FAIRNESS__SIGNING_KEY_FILE is not set: production signs each event's log \
                 with its own key (`fcfs-coupon fairness-key --name <your domain> > key` makes \
                 one), or set APP_FAIRNESS__ENABLED=false to run without the log"
            ),
        };
        if env == Environment::Production && key.is_development() {
            anyhow::bail!(
                "APP_FAIRNESS__SIGNING_KEY_FILE holds the public development key; make your own"
            );
        }
        Ok(Some(key))
    }
}

/// The ops port: metrics and health for operators, in every process.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpsSettings {
    pub addr: String,
}

impl Default for OpsSettings {
    fn default() -> Self {
        Self {
            // Unauthenticated, and metrics tell too much: reachable from elsewhere only when
            // a deployment says so (compose does, for its Prometheus).
            addr: "127.0.0.1:9100".into(),
        }
    }
}

impl Settings {
    /// Loads defaults, then `file` when given, then the environment, and checks the settings
    /// that depend on each other.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let settings = Self::read(file)?;
        settings.check()?;
        Ok(settings)
    }

    /// Refuses combinations that cannot work, naming the variable to change.
    pub fn check(&self) -> anyhow::Result<()> {
        self.redis.check()?;
        self.gate.check()?;
        self.rate_limit.check()?;
        crate::api::ClientAddress::new(&self.http.trusted_proxies)?;
        self.issuer.period().context("APP_ISSUER__SCHEDULE")?;
        if self.issuer.lease_ms < IssuerSettings::MIN_LEASE_MS {
            anyhow::bail!(
                "APP_ISSUER__LEASE_MS must be at least {} (the producer's send timeout is two thirds of it)",
                IssuerSettings::MIN_LEASE_MS
            );
        }
        Ok(())
    }

    /// The longest from the start of an issuer's claim to the start of its send: the claim's
    /// own call, then (with replicas confirming) a confirmation that may queue behind another.
    /// The issuer abandons a claim that took longer (its lease hands the winners back), so a
    /// restore can count on every send started before its hold having landed or failed by
    /// `claim_window + send_timeout` after it (see `ops::reconcile`).
    pub fn claim_window(&self) -> Duration {
        let confirming = if self.redis.ack_replicas > 0 {
            self.redis.ack_timeout() * 2
        } else {
            Duration::ZERO
        };
        self.redis.timeout() + confirming
    }

    fn read(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).required(true));
        }
        // Values stay strings until a field asks for a number: a password `0123` stays `0123`.
        let env = config::Environment::with_prefix("APP")
            .prefix_separator("_")
            .separator("__")
            .source(Some(secret_files::resolve(std::env::vars())?));
        Self::from_config(
            builder
                .add_source(env)
                .build()
                .context("reading configuration")?,
        )
    }

    /// Every name must be one this service knows: a typo (`APP_AUTH__AUDIANCE`) would
    /// otherwise silently leave a check off. The refusal names the nearest known setting.
    fn from_config(config: config::Config) -> anyhow::Result<Self> {
        config.try_deserialize().map_err(|e| {
            let message = e.to_string();
            match unknown_setting(&message) {
                Some(hint) => anyhow::anyhow!("{hint}"),
                None => anyhow::anyhow!("parsing configuration: {message}"),
            }
        })
    }
}

/// "APP_AUTH__AUDIANCE is not a setting; did you mean APP_AUTH__AUDIENCE?", from serde's
/// `unknown field `audiance`, expected one of `…`` and config's ` for key `auth``.
fn unknown_setting(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let section = rest
        .rsplit_once(" for key `")
        .and_then(|(_, key)| key.split('`').next())
        .filter(|key| !key.is_empty());
    let env_name = |field: &str| {
        let path = section.map_or(field.to_owned(), |s| format!("{s}.{field}"));
        format!("APP_{}", path.replace('.', "__").to_uppercase())
    };
    let expected = rest.split(" for key `").next().unwrap_or(rest);
    let nearest = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .min_by_key(|known| strsim::levenshtein(field, known));
    let unknown = env_name(field);
    Some(match nearest {
        Some(known) => format!(
            "{unknown} is not a setting; did you mean {}? (an unknown name is refused so that a \
             typo cannot leave a setting at its default)",
            env_name(known)
        ),
        None => format!("{unknown} is not a setting"),
    })
}

/// Production refuses what development tolerates (a built-in or short token secret).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Production,
    Development,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    pub addr: String,
    /// Applications worked on at once per instance; the rest wait, costing no CPU, so a spike
    /// cannot queue every other route behind it (a bulkhead).
    pub apply_concurrency: usize,
    /// Larger request bodies are refused with 413 before they are parsed.
    pub max_body_bytes: usize,
    /// Requests whose headers add up to more are refused with 431.
    pub max_header_bytes: usize,
    /// A request (body upload included) that takes longer is answered 408 and dropped.
    pub request_timeout_ms: u64,
    /// A connection whose client sends nothing for this long while the server waits for it is
    /// closed (unfinished headers, idle keep-alives). Keep it above `request_timeout_ms`.
    pub idle_timeout_ms: u64,
    /// Comma-separated CIDRs of the proxies whose `X-Forwarded-For` is believed (see
    /// `api::ClientAddress`); empty: the TCP peer is the client.
    pub trusted_proxies: String,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            addr: "0.0.0.0:8080".into(),
            apply_concurrency: 32,
            max_body_bytes: 16 * 1024,
            max_header_bytes: 16 * 1024,
            request_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            trusted_proxies: String::new(),
        }
    }
}

impl HttpSettings {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
}

/// Batched admission: each instance sends the applications for one event that arrive close
/// together in one script call (see `gate::batching`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GateSettings {
    /// The longest an application waits here for others to join its call, in µs; also the
    /// bound on reordering across instances (README's Guarantees). 0: one call per application.
    pub batch_window_us: u64,
    /// The most applications in one call: a full batch goes at once.
    pub batch_max: usize,
}

impl Default for GateSettings {
    fn default() -> Self {
        Self {
            batch_window_us: 200,
            batch_max: 64,
        }
    }
}

impl GateSettings {
    /// Above this a window stops being a batching detail and becomes a visible delay.
    pub const MAX_WINDOW_US: u64 = 10_000;
    /// One script call must stay short: Redis runs nothing else meanwhile. (The script unpacks
    /// two values per winner into one command; Lua allows about 8,000.)
    pub const MAX_BATCH: usize = 1024;

    pub fn batch_window(&self) -> Duration {
        Duration::from_micros(self.batch_window_us)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.batch_window_us > Self::MAX_WINDOW_US {
            anyhow::bail!(
                "APP_GATE__BATCH_WINDOW_US must be at most {} (0 sends each application alone)",
                Self::MAX_WINDOW_US
            );
        }
        if !(1..=Self::MAX_BATCH).contains(&self.batch_max) {
            anyhow::bail!(
                "APP_GATE__BATCH_MAX must be between 1 and {}",
                Self::MAX_BATCH
            );
        }
        Ok(())
    }
}

/// Token buckets in front of the admission gate: a request over its bucket is answered 429
/// before it reaches Redis, so it never counts as an application and never takes stock.
/// A rate of 0 turns that limit off.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Applications per second one user may make (after the burst)…
    pub per_user_per_sec: u32,
    /// …and how many at once.
    pub per_user_burst: u32,
    /// Applications per second from one client address, whoever the users are (bots rotating
    /// accounts). Behind a proxy every client shares the proxy's address: raise or disable it.
    pub per_address_per_sec: u32,
    pub per_address_burst: u32,
    /// Whose buckets these are: each instance's own (in memory), or one set in Redis that
    /// every instance shares.
    pub scope: RateLimitScope,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitScope {
    /// In this instance's memory: N instances let through N times the rate, and a limited
    /// request costs no Redis call.
    #[default]
    Instance,
    /// In Redis, one atomic script per application: the rate holds across instances.
    Shared,
}

impl RateLimitSettings {
    /// Above this a token's interval is under a microsecond, which the shared buckets (µs) and
    /// their expiry cannot express.
    pub const MAX_PER_SEC: u32 = 1_000_000;

    fn check(&self) -> anyhow::Result<()> {
        for (name, rate) in [
            ("APP_RATE_LIMIT__PER_USER_PER_SEC", self.per_user_per_sec),
            (
                "APP_RATE_LIMIT__PER_ADDRESS_PER_SEC",
                self.per_address_per_sec,
            ),
        ] {
            if rate > Self::MAX_PER_SEC {
                anyhow::bail!(
                    "{name} must be at most {} (0 turns the limit off)",
                    Self::MAX_PER_SEC
                );
            }
        }
        Ok(())
    }
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            per_user_per_sec: 2,
            per_user_burst: 5,
            per_address_per_sec: 200,
            per_address_burst: 400,
            scope: RateLimitScope::Instance,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// A URL may carry a password, so it does not print.
    pub url: SecretString,
    /// Every key the service writes starts with this, so tests and tenants can share a server.
    pub key_prefix: String,
    /// Multiplexed connections shared by all requests (each pipelines many commands).
    pub pool_size: usize,
    /// Bounds every Redis call: a hung server turns into 503 UNAVAILABLE, not a hung request.
    pub timeout_ms: u64,
    pub mode: RedisMode,
    /// `host:port,…`: the sentinels (sentinel mode; the URL's password and database still
    /// apply to the master they name), or a cluster's seed nodes (cluster mode; the URL's user
    /// and password apply to every node).
    pub nodes: String,
    /// The master's name at the sentinels.
    pub sentinel_master: String,
    /// Replicas that must hold an admission before it is answered 202 (`WAIT`), and that must
    /// hold a winner before the issuer publishes it. 0 turns this off.
    pub ack_replicas: u32,
    /// How long an application waits for those replicas before it is answered 503.
    pub ack_timeout_ms: u64,
    /// The CA that signed the Redis server's certificate (PEM), for `rediss://`; unset: the
    /// system's trust store.
    pub ca_file: Option<std::path::PathBuf>,
    /// How long a finished, fully persisted event's keys stay in Redis; its reads then come
    /// from PostgreSQL. 0 keeps them forever.
    pub retention_secs: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One server at `url`.
    #[default]
    Standalone,
    /// The master the sentinels in `nodes` name `sentinel_master`, followed across failovers.
    Sentinel,
    /// Redis Cluster, reached through the seed nodes in `nodes`; each coupon's keys live on
    /// the shard of its `{c<id>}` hash tag.
    Cluster,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "fcfs".into(),
            pool_size: 4,
            timeout_ms: 2_000,
            mode: RedisMode::Standalone,
            nodes: String::new(),
            sentinel_master: "fcfs".into(),
            ack_replicas: 0,
            ack_timeout_ms: 1_000,
            retention_secs: 86_400,
            ca_file: None,
        }
    }
}

impl RedisSettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn ack_timeout(&self) -> Duration {
        Duration::from_millis(self.ack_timeout_ms)
    }

    /// The nodes of `APP_REDIS__NODES`, as URLs.
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| format!("redis://{n}"))
            .collect()
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.key_prefix.contains('{') || self.key_prefix.contains('}') {
            anyhow::bail!(
                "APP_REDIS__KEY_PREFIX must not contain '{{' or '}}': it would become every key's hash tag"
            );
        }
        match self.mode {
            RedisMode::Standalone => {}
            RedisMode::Sentinel if self.node_urls().is_empty() => anyhow::bail!(
                "APP_REDIS__MODE=sentinel needs APP_REDIS__NODES (the sentinels, host:port,…)"
            ),
            RedisMode::Sentinel => {}
            RedisMode::Cluster if self.node_urls().is_empty() => anyhow::bail!(
                "APP_REDIS__MODE=cluster needs APP_REDIS__NODES (seed nodes, host:port,…)"
            ),
            RedisMode::Cluster => {}
        }
        if self.ack_replicas > 0
            && (self.ack_timeout_ms == 0 || self.ack_timeout_ms >= self.timeout_ms)
        {
            anyhow::bail!(
                "APP_REDIS__ACK_TIMEOUT_MS must be above 0 and below APP_REDIS__TIMEOUT_MS ({} ms)",
                self.timeout_ms
            );
        }
        Ok(())
    }

    pub fn pool(&self) -> anyhow::Result<deadpool_redis::Pool> {
        let mut config = deadpool_redis::Config::from_url(self.url.expose_secret());
        let mut pool = deadpool_redis::PoolConfig::new(self.pool_size);
        pool.timeouts.wait = Some(self.timeout());
        pool.timeouts.create = Some(self.timeout());
        pool.timeouts.recycle = Some(self.timeout());
        config.pool = Some(pool);
        config
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .context("building the Redis pool")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: SecretString,
    /// The API's pool (its reads and event creation).
    pub max_connections: u32,
    /// The consumer's own pool, so no amount of API traffic can take its connections.
    pub consumer_connections: u32,
    /// `serve` creates the database if missing and applies migrations at start. `false` lets it
    /// run with a login that may only read and write rows; `fcfs-coupon migrate`, run with the
    /// owner's login, then does that part.
    pub migrate: bool,
    /// Production connects only over TLS that verifies the server (`sslmode=verify-full` or
    /// `verify-ca` on the URL) unless this says plaintext is fine (a unix socket, a sidecar).
    pub allow_plaintext: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/fcfs".into(),
            max_connections: 10,
            consumer_connections: 4,
            migrate: true,
            allow_plaintext: false,
        }
    }
}

impl DatabaseSettings {
    /// How the connection is protected, for the start-up log, or why production must not use
    /// it: sqlx's default (`prefer`) falls back to plaintext without a word, and `require` does
    /// not check whom it talks to.
    pub fn transport(&self, env: Environment) -> anyhow::Result<&'static str> {
        use sqlx::postgres::PgSslMode;
        let verified = match self.connect_options()?.get_ssl_mode() {
            PgSslMode::VerifyFull => return Ok("TLS, server certificate and host name verified"),
            PgSslMode::VerifyCa => return Ok("TLS, server certificate verified"),
            PgSslMode::Require => "TLS without verifying the server",
            PgSslMode::Prefer | PgSslMode::Allow => "TLS if the server offers it, else plaintext",
            PgSslMode::Disable => "plaintext",
        };
        if env == Environment::Production && !self.allow_plaintext {
            anyhow::bail!(
                "APP_DATABASE__URL would connect with {verified}: production needs \
                 `sslmode=verify-full` (and `sslrootcert=` for a private CA) on the URL, or \
                 APP_DATABASE__ALLOW_PLAINTEXT=true where the link needs no TLS (a unix socket, a \
                 sidecar)"
            );
        }
        Ok(verified)
    }

    pub fn connect_options(&self) -> anyhow::Result<PgConnectOptions> {
        let options: PgConnectOptions = self
            .url
            .expose_secret()
            .parse()
            .context("APP_DATABASE__URL is not a valid PostgreSQL URL")?;
        Ok(options.log_statements(tracing::log::LevelFilter::Trace))
    }

    /// A pool on the configured database, which must exist (see [`Self::create_if_missing`]).
    pub async fn pool(&self) -> anyhow::Result<PgPool> {
        self.pool_of(self.max_connections).await
    }

    /// A pool of `connections` on the configured database, for one part of the process.
    pub async fn pool_of(&self, connections: u32) -> anyhow::Result<PgPool> {
        PgPoolOptions::new()
            .max_connections(connections.max(1))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(self.connect_options()?)
            .await
            .context("connecting to PostgreSQL")
    }

    /// A pool whose statements are cancelled after `statement_timeout`, for a part that must
    /// keep its pace (the Redis watcher looks every second).
    pub async fn pool_with_timeout(
        &self,
        connections: u32,
        statement_timeout: Duration,
    ) -> anyhow::Result<PgPool> {
        let options = self.connect_options()?.options([(
            "statement_timeout",
            statement_timeout.as_millis().to_string(),
        )]);
        PgPoolOptions::new()
            .max_connections(connections.max(1))
            .acquire_timeout(statement_timeout)
            .connect_with(options)
            .await
            .context("connecting to PostgreSQL")
    }

    /// Creates the configured database when it does not exist yet: what `migrate` and `serve`
    /// do at start, so a fresh machine needs no manual step. Needs a login allowed to create
    /// databases when it does.
    pub async fn create_if_missing(&self) -> anyhow::Result<()> {
        let options = self.connect_options()?;
        let name = options.get_database().unwrap_or("postgres").to_owned();
        let mut maintenance = options
            .database("postgres")
            .connect()
            .await
            .context("connecting to PostgreSQL's maintenance database")?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&name)
                .fetch_one(&mut maintenance)
                .await?;
        if !exists {
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            // Two instances starting together may race to create it; the loser is fine.
            if let Err(e) = sqlx::query(&format!("CREATE DATABASE {quoted}"))
                .execute(&mut maintenance)
                .await
            {
                let duplicate = e
                    .as_database_error()
                    .and_then(|d| d.code())
                    .is_some_and(|code| code == "42P04" || code == "23505");
                if !duplicate {
                    return Err(e).context("creating the database");
                }
            }
            tracing::info!(database = %name, "created database");
        }
        maintenance.close().await.ok();
        Ok(())
    }
}

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topic: String,
    pub group_id: String,
    /// Used when the service creates the topic at start.
    pub partitions: i32,
    pub replication_factor: i32,
    /// `min.insync.replicas` of the topics the service creates (with `acks=all`, how many
    /// replicas must have a message before it is acknowledged); unset: the broker's default.
    pub min_insync_replicas: Option<i32>,
    /// Create the issue and dead-letter topics at start when missing. `false` for a broker
    /// whose ACLs do not let the service create topics (an operator creates them).
    pub create_topics: bool,
    /// librdkafka properties for every client, passed through as given
    /// (`APP_KAFKA__PROPERTIES__SECURITY_PROTOCOL=SASL_SSL` sets `security.protocol`: `_` in
    /// the variable's name is `.` in the property's).
    pub properties: std::collections::BTreeMap<String, String>,
}

/// Settings are logged and printed (`check-config`): the values of properties that carry a
/// secret (SASL passwords, key passwords, OAuth secrets, JAAS configs) never are.
impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: std::collections::BTreeMap<&str, &str> = (self.properties.iter())
            .map(|(name, value)| {
                let shown = if secret_property(name) {
                    "[REDACTED]"
                } else {
                    value
                };
                (name.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaSettings")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("group_id", &self.group_id)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("min_insync_replicas", &self.min_insync_replicas)
            .field("create_topics", &self.create_topics)
            .field("properties", &properties)
            .finish()
    }
}

/// A librdkafka property whose value is a secret (by its name, `.` or `_` separated).
pub fn secret_property(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "secret", "key", "token", "jaas", "credential"]
        .iter()
        .any(|word| name.contains(word))
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic: "coupon-issue-request".into(),
            group_id: "coupon-issuer".into(),
            partitions: 6,
            replication_factor: 1,
            min_insync_replicas: None,
            create_topics: true,
            properties: Default::default(),
        }
    }
}

impl KafkaSettings {
    /// Where messages that can never be persisted go.
    pub fn dead_letter_topic(&self) -> String {
        format!("{}.dlq", self.topic)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IssuerSettings {
    /// Winners claimed, sent and acknowledged together.
    pub batch_size: usize,
    /// How long a claim is owned; past it, another instance takes the winners over. Must exceed
    /// the time one batch takes to be delivered.
    pub lease_ms: u64,
    /// A six-field cron expression (with seconds).
    pub schedule: String,
}

impl Default for IssuerSettings {
    fn default() -> Self {
        Self {
            batch_size: 1_000,
            lease_ms: 10_000,
            schedule: "*/1 * * * * *".into(),
        }
    }
}

impl IssuerSettings {
    /// A send must be able to fail (and its winners go back to pending) well before its claim
    /// is handed to another instance; a lease this short leaves librdkafka too little time.
    pub const MIN_LEASE_MS: u64 = 3_000;

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// How long the producer may try to deliver one message: two thirds of the lease, so a stuck
    /// send fails before its claim expires. Derived, so the two cannot be set against each other.
    pub fn send_timeout(&self) -> Duration {
        self.lease() * 2 / 3
    }

    /// The time between two ticks of [`Self::schedule`] (the next two, from now): how long a
    /// poller waits for a status to change. Parsed as the scheduler parses it.
    pub fn period(&self) -> anyhow::Result<Duration> {
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(&self.schedule)
            .map_err(|e| anyhow::anyhow!("invalid cron expression {:?}: {e}", self.schedule))?;
        let now = chrono::Utc::now();
        let next = cron
            .find_next_occurrence(&now, false)
            .map_err(|e| anyhow::anyhow!("{:?} never fires: {e}", self.schedule))?;
        let after = cron
            .find_next_occurrence(&next, false)
            .map_err(|e| anyhow::anyhow!("{:?} fires only once: {e}", self.schedule))?;
        (after - next)
            .to_std()
            .map_err(|e| anyhow::anyhow!("{:?}: {e}", self.schedule))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerSettings {
    /// A batch ends at this many messages…
    pub batch_size: usize,
    /// …or this long after its first message.
    pub batch_wait_ms: u64,
    /// Caps the rows written per second; unset, the database takes what arrives.
    pub max_rows_per_sec: Option<u32>,
    /// A consumer that dies without leaving is replaced in the group after this long.
    pub session_timeout_ms: u64,
    /// How long one batch may take (database retries included) before the group gives the
    /// consumer's partitions to another; also how long a rebalance waits for members.
    pub max_poll_interval_ms: u64,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            batch_wait_ms: 100,
            max_rows_per_sec: None,
            session_timeout_ms: 10_000,
            max_poll_interval_ms: 300_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 secret; `None` falls back to [`DEVELOPMENT_JWT_SECRET`].
    pub jwt_secret: Option<SecretString>,
    /// An identity provider's RSA or P-256 public key (PEM): its RS256/ES256 tokens are accepted.
    pub public_key_file: Option<std::path::PathBuf>,
    /// An identity provider's JWKS: keys by `kid`, fetched again for an unknown one at most
    /// every 10 s.
    pub jwks_url: Option<String>,
    /// A private CA that signed the JWKS endpoint's certificate (PEM).
    pub jwks_ca_file: Option<std::path::PathBuf>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` (and `nbf`), in seconds.
    pub leeway_secs: u64,
    /// The claim that holds the user id (a positive 64-bit integer, as a number or a string).
    pub user_claim: String,
    /// Where an identity provider's token says its holder is an admin: a dot path into the
    /// claims (`role`, `groups`, `realm_access.roles`), holding `admin_value` or a list with it.
    pub admin_claim: String,
    pub admin_value: String,
    /// Whether the service's own HS256 tokens are minted and accepted. Unset: yes, except in
    /// production with an identity provider, where the provider is the source of truth and
    /// whoever held the HS256 secret could act as anyone.
    pub local_tokens: Option<bool>,
    /// Signs rehearsal users' HS256 tokens (header `kid: rehearsal`): accepted for rehearsal
    /// events only, never admin, whatever else is configured. Unset: none in production, a
    /// development secret in development.
    pub rehearsal_secret: Option<SecretString>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            public_key_file: None,
            jwks_url: None,
            jwks_ca_file: None,
            issuer: None,
            audience: None,
            leeway_secs: 30,
            user_claim: "sub".into(),
            admin_claim: "role".into(),
            admin_value: "admin".into(),
            local_tokens: None,
            rehearsal_secret: None,
        }
    }
}

impl AuthSettings {
    /// Fewer bytes than this are refused in production: an HS256 key shorter than its hash.
    pub const MIN_SECRET_BYTES: usize = 32;

    /// Whether an identity provider's tokens are accepted (a PEM key or a JWKS).
    pub fn has_provider(&self) -> bool {
        self.public_key_file.is_some() || self.jwks_url.is_some()
    }

    /// Whether the service's own HS256 tokens are minted and accepted in `env`.
    pub fn local_tokens(&self, env: Environment) -> bool {
        self.local_tokens
            .unwrap_or(!(env == Environment::Production && self.has_provider()))
    }

    /// Why these rules cannot authenticate anyone safely, if they cannot.
    pub fn check(&self, env: Environment) -> anyhow::Result<()> {
        if self.has_provider() && (self.issuer.is_none() || self.audience.is_none()) {
            anyhow::bail!(
                "APP_AUTH__ISSUER and APP_AUTH__AUDIENCE are required with an identity provider \
                 (APP_AUTH__JWKS_URL or APP_AUTH__PUBLIC_KEY_FILE): without them a token the \
                 same keys signed for another application would be accepted here"
            );
        }
        if env == Environment::Production
            && self
                .jwks_url
                .as_deref()
                .is_some_and(|u| !u.starts_with("https://"))
        {
            anyhow::bail!(
                "APP_AUTH__JWKS_URL must be https:// in production: keys fetched in plaintext \
                 can be swapped on the way (a private CA goes in APP_AUTH__JWKS_CA_FILE)"
            );
        }
        if !self.local_tokens(env) && !self.has_provider() {
            anyhow::bail!(
                "APP_AUTH__LOCAL_TOKENS=false leaves no token this service accepts: set \
                 APP_AUTH__JWKS_URL or APP_AUTH__PUBLIC_KEY_FILE"
            );
        }
        if self.admin_claim.split('.').any(str::is_empty) || self.admin_value.is_empty() {
            anyhow::bail!(
                "APP_AUTH__ADMIN_CLAIM must be a dot path such as `groups` or \
                 `realm_access.roles`, and APP_AUTH__ADMIN_VALUE not empty"
            );
        }
        Ok(())
    }

    /// The secret a serving or token-minting process may use in `env` (none when the service's
    /// own tokens are off), or why it must not start: in production, a secret that is missing,
    /// shorter than [`Self::MIN_SECRET_BYTES`] or publicly known. Whoever has the secret mints
    /// admin tokens.
    pub fn checked_secret(&self, env: Environment) -> anyhow::Result<Option<SecretString>> {
        self.check(env)?;
        if !self.local_tokens(env) {
            return Ok(None);
        }
        let Some(secret) = &self.jwt_secret else {
            if env == Environment::Development {
                return Ok(Some(self.secret()));
            }
            anyhow::bail!(
                "APP_AUTH__JWT_SECRET is not set. Set it to a random value of at least {} bytes \
                 (for example `openssl rand -base64 48`), or set APP_ENV=development to run \
                 with the built-in development secret",
                Self::MIN_SECRET_BYTES
            );
        };
        if env == Environment::Production {
            let value = secret.expose_secret();
            if KNOWN_SECRETS.contains(&value) {
                anyhow::bail!(
                    "APP_AUTH__JWT_SECRET is a publicly known development value; set a random one"
                );
            }
            if value.len() < Self::MIN_SECRET_BYTES {
                anyhow::bail!(
                    "APP_AUTH__JWT_SECRET has {} bytes; production needs at least {}",
                    value.len(),
                    Self::MIN_SECRET_BYTES
                );
            }
        }
        Ok(Some(secret.clone()))
    }

    /// The secret rehearsal tokens are signed with in `env`, if any, or why it must not be used:
    /// in production, one shorter than [`Self::MIN_SECRET_BYTES`], publicly known, or equal to
    /// `APP_AUTH__JWT_SECRET` (whoever rehearses must not be able to mint admin tokens).
    pub fn checked_rehearsal_secret(
        &self,
        env: Environment,
    ) -> anyhow::Result<Option<SecretString>> {
        let Some(secret) = &self.rehearsal_secret else {
            return Ok(
                (env == Environment::Development).then(|| DEVELOPMENT_REHEARSAL_SECRET.into())
            );
        };
        let value = secret.expose_secret();
        if self.secret().expose_secret() == value {
            anyhow::bail!(
                "APP_AUTH__REHEARSAL_SECRET equals APP_AUTH__JWT_SECRET: rehearsal tokens would \
                 be a way to mint any token; set a secret of its own"
            );
        }
        if env == Environment::Production {
            if KNOWN_SECRETS.contains(&value) {
                anyhow::bail!(
                    "APP_AUTH__REHEARSAL_SECRET is a publicly known development value; set a random one"
                );
            }
            if value.len() < Self::MIN_SECRET_BYTES {
                anyhow::bail!(
                    "APP_AUTH__REHEARSAL_SECRET has {} bytes; production needs at least {}",
                    value.len(),
                    Self::MIN_SECRET_BYTES
                );
            }
        }
        Ok(Some(secret.clone()))
    }

    pub fn secret(&self) -> SecretString {
        self.jwt_secret
            .clone()
            .unwrap_or_else(|| DEVELOPMENT_JWT_SECRET.into())
    }

    pub fn uses_development_secret(&self) -> bool {
        self.jwt_secret.is_none()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info,sqlx=warn".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(schedule: &str, lease_ms: u64) -> Settings {
        let mut s = Settings::default();
        s.issuer.schedule = schedule.into();
        s.issuer.lease_ms = lease_ms;
        s
    }

    #[test]
    fn a_rediss_url_means_tls_whatever_its_case() {
        let tls = |url: &str| {
            let redis = RedisSettings {
                url: url.to_owned().into(),
                ..Default::default()
            };
            redis.tls()
        };
        for url in [
            "rediss://127.0.0.1:6380",
            "REDISS://127.0.0.1:6380",
            "Rediss://u:p@h:1/0",
        ] {
            assert!(tls(url), "{url}");
        }
        for url in [
            "redis://127.0.0.1:6379",
            "REDIS://h:1",
            "redis+unix:///tmp/r.sock",
        ] {
            assert!(!tls(url), "{url}");
        }
    }

    #[test]
    fn the_ops_port_listens_on_loopback_unless_told_otherwise() {
        let addr: std::net::SocketAddr = Settings::default().ops.addr.parse().unwrap();
        assert!(addr.ip().is_loopback(), "{addr}");
    }

    #[test]
    fn the_issuer_period_is_read_from_its_schedule() {
        let period = |cron: &str| issuer(cron, 30_000).issuer.period().unwrap();
        assert_eq!(period("*/1 * * * * *"), Duration::from_secs(1));
        assert_eq!(period("*/5 * * * * *"), Duration::from_secs(5));
        assert_eq!(period("0 */2 * * * *"), Duration::from_secs(120));
        assert!(issuer("every second", 30_000).check().is_err());
    }

    #[test]
    fn the_send_timeout_follows_the_lease_and_a_short_lease_is_refused() {
        assert_eq!(
            issuer("*/1 * * * * *", 30_000).issuer.send_timeout(),
            Duration::from_secs(20)
        );
        assert!(issuer("*/1 * * * * *", 2_999).check().is_err());
        assert!(issuer("*/1 * * * * *", 3_000).check().is_ok());
    }

    #[test]
    fn production_refuses_a_missing_short_or_known_secret() {
        let mut auth = AuthSettings::default();
        let production = Environment::Production;
        let message =
            |auth: &AuthSettings| auth.checked_secret(production).unwrap_err().to_string();
        assert!(message(&auth).contains("APP_AUTH__JWT_SECRET is not set"));
        assert!(auth.checked_secret(Environment::Development).is_ok());
        auth.jwt_secret = Some("short".into());
        assert!(message(&auth).contains("5 bytes"));
        auth.jwt_secret = Some(DEVELOPMENT_JWT_SECRET.into());
        assert!(message(&auth).contains("publicly known"));
        auth.jwt_secret = Some("x".repeat(32).into());
        assert!(auth.checked_secret(production).is_ok());
    }

    #[test]
    fn an_identity_provider_needs_issuer_and_audience_and_turns_local_tokens_off_in_production() {
        let (production, development) = (Environment::Production, Environment::Development);
        let mut auth = AuthSettings {
            jwks_url: Some("https://idp.example.test/jwks".into()),
            ..AuthSettings::default()
        };
        let refused = |auth: &AuthSettings| auth.check(development).unwrap_err().to_string();
        assert!(refused(&auth).contains("APP_AUTH__ISSUER and APP_AUTH__AUDIENCE"));
        auth.issuer = Some("https://idp.example.test/".into());
        assert!(refused(&auth).contains("APP_AUTH__AUDIENCE"));
        auth.audience = Some("fcfs-coupon".into());
        assert!(auth.check(development).is_ok());
        // Production with a provider: no HS256 tokens, so no secret is needed.
        assert!(!auth.local_tokens(production));
        assert!(auth.checked_secret(production).unwrap().is_none());
        assert!(auth.local_tokens(development));
        // Asked for explicitly, they come back, with the secret's rules.
        auth.local_tokens = Some(true);
        assert!(auth.checked_secret(production).is_err());
        auth.jwks_url = Some("http://idp.example.test/jwks".into());
        let https = auth.check(production).unwrap_err().to_string();
        assert!(https.contains("must be https://"), "{https}");
        assert!(auth.check(development).is_ok());
        // Off without a provider: nobody could sign in.
        let auth = AuthSettings {
            local_tokens: Some(false),
            ..AuthSettings::default()
        };
        assert!(refused(&auth).contains("APP_AUTH__LOCAL_TOKENS=false"));
        let auth = AuthSettings {
            admin_claim: "realm_access..roles".into(),
            ..AuthSettings::default()
        };
        assert!(refused(&auth).contains("APP_AUTH__ADMIN_CLAIM"));
    }

    fn from_toml(text: &str) -> anyhow::Result<Settings> {
        let source = config::File::from_str(text, config::FileFormat::Toml);
        Settings::from_config(config::Config::builder().add_source(source).build()?)
    }

    #[test]
    fn an_unknown_setting_is_refused_with_the_nearest_known_name() {
        let refused = from_toml("[auth]\naudiance = \"fcfs\"")
            .unwrap_err()
            .to_string();
        assert!(
            refused.starts_with(
                "APP_AUTH__AUDIANCE is not a setting; did you mean APP_AUTH__AUDIENCE?"
            ),
            "{refused}"
        );
        let refused = from_toml("evn = \"development\"").unwrap_err().to_string();
        assert!(refused.contains("did you mean APP_ENV?"), "{refused}");
        // Free-form librdkafka properties are not settings of ours; strings stay strings.
        let settings = from_toml("[kafka.properties]\n\"sasl.password\" = \"0123\"").unwrap();
        assert_eq!(settings.kafka.properties["sasl.password"], "0123");
    }

    #[test]
    fn production_reaches_postgresql_only_over_verified_tls_unless_told_otherwise() {
        let database = |url: &str, allow_plaintext| DatabaseSettings {
            url: url.to_owned().into(),
            allow_plaintext,
            ..DatabaseSettings::default()
        };
        let (production, development) = (Environment::Production, Environment::Development);
        for url in [
            "postgres://app@db/fcfs",
            "postgres://app@db/fcfs?sslmode=prefer",
            "postgres://app@db/fcfs?sslmode=require",
            "postgres://app@db/fcfs?sslmode=disable",
        ] {
            let refused = database(url, false).transport(production).unwrap_err();
            assert!(refused.to_string().contains("sslmode=verify-full"), "{url}");
            assert!(database(url, true).transport(production).is_ok());
            assert!(database(url, false).transport(development).is_ok());
        }
        for url in [
            "postgres://app@db/fcfs?sslmode=verify-full",
            "postgres://app@db/fcfs?sslmode=verify-ca&sslrootcert=/etc/ca.pem",
        ] {
            assert!(database(url, false).transport(production).is_ok(), "{url}");
        }
    }

    #[test]
    fn secrets_never_print() {
        let mut s = Settings::default();
        for (name, value) in [
            ("sasl_password", "hunter22"),
            ("ssl.key.password", "k3y-pass"),
            ("sasl.oauthbearer.client.secret", "oauth-s3cret"),
            ("sasl.username", "coupon-app"),
        ] {
            s.kafka.properties.insert(name.into(), value.into());
        }
        s.auth.jwt_secret = Some("a-production-secret-of-at-least-32-bytes!".into());
        s.redis.url = "redis://:redis-pass@10.0.0.1:6379".to_owned().into();
        s.database.url = "postgres://app:db-pass@10.0.0.2/fcfs".to_owned().into();
        let printed = format!("{s:?}");
        for secret in [
            "hunter22",
            "k3y-pass",
            "oauth-s3cret",
            "production-secret",
            "redis-pass",
            "db-pass",
        ] {
            assert!(!printed.contains(secret), "{secret} printed: {printed}");
        }
        assert!(printed.contains("coupon-app"), "{printed}");
    }

    #[test]
    fn redis_modes_are_checked_at_load() {
        let mut s = Settings::default();
        s.redis.mode = RedisMode::Sentinel;
        assert!(s.check().is_err(), "sentinel mode without sentinels");
        s.redis.nodes = "127.0.0.1:26379, 127.0.0.1:26380".into();
        assert!(s.check().is_ok());

        assert_eq!(
            s.redis.node_urls(),
            ["redis://127.0.0.1:26379", "redis://127.0.0.1:26380"]
        );
        s.redis.ack_replicas = 1;
        s.redis.ack_timeout_ms = s.redis.timeout_ms;
        assert!(
            s.check().is_err(),
            "an ack timeout the call timeout cuts short"
        );
        s.redis.ack_timeout_ms = 500;
        assert!(s.check().is_ok());
        s.redis.mode = RedisMode::Cluster;
        s.redis.nodes = String::new();
        assert!(s.check().is_err(), "cluster mode without seed nodes");
        s.redis.nodes = "127.0.0.1:7000".into();
        assert!(s.check().is_ok());
    }

    #[test]
    fn batch_settings_out_of_range_are_refused_naming_the_variable() {
        let mut s = Settings::default();
        assert_eq!((s.gate.batch_window_us, s.gate.batch_max), (200, 64));
        s.gate.batch_window_us = GateSettings::MAX_WINDOW_US + 1;
        let refused = s.check().unwrap_err().to_string();
        assert!(refused.contains("APP_GATE__BATCH_WINDOW_US"), "{refused}");
        s.gate.batch_window_us = 0;
        s.gate.batch_max = 0;
        let refused = s.check().unwrap_err().to_string();
        assert!(refused.contains("APP_GATE__BATCH_MAX"), "{refused}");
        s.gate.batch_max = GateSettings::MAX_BATCH;
        assert!(s.check().is_ok());
    }

    #[test]
    fn a_prefix_with_a_hash_tag_is_refused() {
        let mut s = Settings::default();
        s.redis.key_prefix = "shop{1}".into();
        assert!(s.check().is_err());
    }
}
