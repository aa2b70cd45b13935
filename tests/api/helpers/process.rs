//! The service as a separate OS process, so a test can SIGKILL it the way a crash would.

use std::process::Stdio;
use std::time::Duration;

use fcfs_coupon::configuration::{RateLimitScope, RedisMode, Settings};
use secrecy::ExposeSecret;
use tokio::process::{Child, Command};

use super::eventually;

pub struct ServiceProcess {
    child: Child,
    pub address: String,
    /// The ops port: `/metrics`, `/health/*`, whatever the roles.
    pub ops_address: String,
    pub log: std::path::PathBuf,
}

/// A port free right now (the OS picked it), for a child process to bind.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `settings` as the binary reads them: `APP_…` variables.
fn service_env(settings: &Settings) -> Vec<(&'static str, String)> {
    let mut env = vec![
        (
            "APP_REDIS__URL",
            settings.redis.url.expose_secret().to_owned(),
        ),
        ("APP_REDIS__KEY_PREFIX", settings.redis.key_prefix.clone()),
        ("APP_REDIS__MODE", redis_mode(settings).into()),
        ("APP_REDIS__NODES", settings.redis.nodes.clone()),
        (
            "APP_REDIS__ACK_REPLICAS",
            settings.redis.ack_replicas.to_string(),
        ),
        (
            "APP_RATE_LIMIT__SCOPE",
            match settings.rate_limit.scope {
                RateLimitScope::Instance => "instance",
                RateLimitScope::Shared => "shared",
            }
            .into(),
        ),
        (
            "APP_RATE_LIMIT__PER_USER_PER_SEC",
            settings.rate_limit.per_user_per_sec.to_string(),
        ),
        (
            "APP_RATE_LIMIT__PER_USER_BURST",
            settings.rate_limit.per_user_burst.to_string(),
        ),
        (
            "APP_RATE_LIMIT__PER_ADDRESS_BURST",
            settings.rate_limit.per_address_burst.to_string(),
        ),
        (
            "APP_DATABASE__URL",
            settings.database.url.expose_secret().to_owned(),
        ),
        ("APP_DATABASE__MAX_CONNECTIONS", "5".into()),
        ("APP_KAFKA__BROKERS", settings.kafka.brokers.clone()),
        ("APP_KAFKA__TOPIC", settings.kafka.topic.clone()),
        ("APP_KAFKA__GROUP_ID", settings.kafka.group_id.clone()),
        (
            "APP_KAFKA__PARTITIONS",
            settings.kafka.partitions.to_string(),
        ),
        ("APP_ISSUER__SCHEDULE", settings.issuer.schedule.clone()),
        ("APP_ISSUER__LEASE_MS", settings.issuer.lease_ms.to_string()),
        (
            "APP_CONSUMER__BATCH_SIZE",
            settings.consumer.batch_size.to_string(),
        ),
        (
            "APP_RATE_LIMIT__PER_ADDRESS_PER_SEC",
            settings.rate_limit.per_address_per_sec.to_string(),
        ),
        (
            "APP_AUTH__JWT_SECRET",
            settings.auth.secret().expose_secret().to_owned(),
        ),
        (
            "APP_LOG__LEVEL",
            "info,sqlx=warn,rdkafka=warn,fcfs_coupon::ops=debug".into(),
        ),
    ];
    let consumer = &settings.consumer;
    env.push((
        "APP_CONSUMER__SESSION_TIMEOUT_MS",
        consumer.session_timeout_ms.to_string(),
    ));
    env.push((
        "APP_CONSUMER__MAX_POLL_INTERVAL_MS",
        consumer.max_poll_interval_ms.to_string(),
    ));
    if let Some(rate) = consumer.max_rows_per_sec {
        env.push(("APP_CONSUMER__MAX_ROWS_PER_SEC", rate.to_string()));
    }
    env
}

fn redis_mode(settings: &Settings) -> &'static str {
    match settings.redis.mode {
        RedisMode::Standalone => "standalone",
        RedisMode::Sentinel => "sentinel",
        RedisMode::Cluster => "cluster",
    }
}

/// Runs a one-shot command of the binary (`audit`, `reconcile`, …) on `settings`; returns
/// whether it exited 0, and what it printed on stdout.
pub async fn run_command(settings: &Settings, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_fcfs-coupon"))
        .args(args)
        .envs(service_env(settings))
        .env("APP_LOG__LEVEL", "warn")
        .output()
        .await
        .expect("the binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

impl ServiceProcess {
    /// Starts `fcfs-coupon serve` with `roles` (all when empty) on `settings`, and waits until
    /// it answers (the API) or has started (other roles).
    pub async fn spawn(settings: &Settings, roles: &[&str]) -> Self {
        let process = Self::start(settings, roles).await;
        process.listening(roles).await;
        process
    }

    /// Starts the process without waiting for it to listen (it may wait for a broker that is
    /// down); `listening` waits.
    pub async fn start(settings: &Settings, roles: &[&str]) -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!(
            "{}-{}-{port}.log",
            settings.redis.key_prefix,
            roles.join("+")
        ));
        let mut command = Command::new(env!("CARGO_BIN_EXE_fcfs-coupon"));
        command.arg("serve");
        for role in roles {
            command.args(["--role", role]);
        }
        command.envs(service_env(settings));
        for (name, value) in &settings.kafka.properties {
            let name = name.replace('.', "_").to_uppercase();
            command.env(format!("APP_KAFKA__PROPERTIES__{name}"), value);
        }
        command.env("APP_HTTP__ADDR", format!("127.0.0.1:{port}"));
        let ops_port = free_port();
        command.env("APP_OPS__ADDR", format!("127.0.0.1:{ops_port}"));
        let file = std::fs::File::create(&log).unwrap();
        command
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        let child = command.spawn().expect("the service binary starts");
        let mut process = Self {
            child,
            address: format!("http://127.0.0.1:{port}"),
            ops_address: format!("http://127.0.0.1:{ops_port}"),
            log,
        };
        // A process that refused to start (bad settings) says why in its log: show it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Ok(Some(status)) = process.child.try_wait() {
            let text = std::fs::read_to_string(&process.log).unwrap_or_default();
            panic!("the service exited at start ({status}):\n{text}");
        }
        process
    }

    /// Waits until it answers (the API) or has started (other roles).
    pub async fn listening(&self, roles: &[&str]) {
        // Every role serves the ops port once it runs; the API its own port too.
        let mut ready = vec![format!("{}/health/live", self.ops_address)];
        if roles.is_empty() || roles.contains(&"api") {
            ready.push(format!("{}/health/live", self.address));
        }
        for url in ready {
            eventually("the service to listen", Duration::from_secs(60), || async {
                reqwest::get(&url)
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
            })
            .await;
        }
    }

    /// SIGKILL: no shutdown hook runs, nothing is flushed or committed.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}
