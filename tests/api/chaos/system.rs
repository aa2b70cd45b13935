//! The system under test of one schedule: a Redis of its own that can be killed and started
//! again on the same port (with its AOF, when it has one), a broker behind a proxy, and two
//! service instances as OS processes, so a nemesis can SIGKILL any of them.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, RwLock};

use fcfs_coupon::configuration::Settings;
use tokio::process::{Child, Command};

use crate::helpers::{
    free_port, isolated_settings, until_redis_answers, DurableBroker, ServiceProcess,
};

/// Where each instance answers now; `None` while it is dead. Clients read it before each call.
pub type Addresses = Arc<RwLock<Vec<Option<String>>>>;

pub const INSTANCES: usize = 2;

/// The issuer lease: sends time out after 6.7 s, longer than any broker fault lasts.
pub const LEASE_MS: u64 = 10_000;

/// `PrivateRedis` cannot start again on its port, and runs without a data directory of its
/// own (an AOF would land in the working directory); this one does both.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    aof: bool,
}

impl RedisServer {
    async fn start(aof: bool) -> Self {
        let dir = std::env::temp_dir().join(format!("chaos-redis-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            child: None,
            port: free_port(),
            dir,
            aof,
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn is_up(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL: with `appendfsync always` every acknowledged write is in the AOF; without it
    /// the memory is gone.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("redis is running");
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }

    /// Starts the server on its port and directory again (replaying its AOF), and waits until
    /// it answers PING.
    pub async fn restart(&mut self) {
        let persistence: &[&str] = if self.aof {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--dir", self.dir.to_str().unwrap()])
            .args(persistence)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        until_redis_answers("the chaos redis-server", &self.url()).await;
    }

    pub async fn connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url())?;
        client.get_multiplexed_async_connection().await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            child.start_kill().ok();
        }
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

pub struct System {
    pub redis: RedisServer,
    pub broker: DurableBroker,
    pub settings: Settings,
    instances: Vec<Option<ServiceProcess>>,
    pub addresses: Addresses,
    /// Every instance's log, the dead ones' too, to read when a schedule fails.
    pub logs: Vec<PathBuf>,
}

impl System {
    pub async fn start(aof: bool) -> Self {
        let redis = RedisServer::start(aof).await;
        let broker = DurableBroker::behind_proxy().await;
        let mut settings = isolated_settings();
        settings.redis.url = redis.url().into();
        settings.redis.ack_replicas = 0;
        settings.kafka.brokers = broker.address();
        // The shortest lease whose send timeout (two thirds of it) outlasts the longest broker
        // fault: Tansu 0.6.0 answers every produce with an error once an idempotent send has
        // timed out (README, "The bounded windows that remain"), which would break the run's
        // broker rather than test the service. A dead instance's claims come back after it.
        settings.issuer.lease_ms = LEASE_MS;
        // Back on the broker right after a fault heals, not after librdkafka's reconnect
        // backoff (up to 10 s by default), which would let a stalled send time out.
        settings
            .kafka
            .properties
            .insert("reconnect.backoff.max.ms".into(), "250".into());
        settings.issuer.schedule = "*/1 * * * * *".into();
        settings.rate_limit.per_user_per_sec = 0;
        settings.rate_limit.per_address_per_sec = 0;
        let mut system = Self {
            redis,
            broker,
            settings,
            instances: (0..INSTANCES).map(|_| None).collect(),
            addresses: Arc::new(RwLock::new(vec![None; INSTANCES])),
            logs: Vec::new(),
        };
        for i in 0..INSTANCES {
            system.restart_instance(i).await;
        }
        for process in system.instances.iter().flatten() {
            process.listening(&[]).await;
        }
        system
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.instances[i].is_some()
    }

    /// SIGKILL: requests in flight to it die unanswered; it finishes nothing.
    pub async fn kill_instance(&mut self, i: usize) {
        self.addresses.write().unwrap()[i] = None;
        let process = self.instances[i].take().expect("instance running");
        process.kill().await;
    }

    /// A new process in its place (a new port), all roles, on the same settings, without
    /// waiting for it to listen: a service starting while the broker is cut waits for it, and
    /// the broker's heal may be the nemesis' next step. Clients meet refused connections
    /// meanwhile, and retry.
    pub async fn restart_instance(&mut self, i: usize) {
        let process = ServiceProcess::start(&self.settings, &[]).await;
        self.addresses.write().unwrap()[i] = Some(process.address.clone());
        self.logs.push(process.log.clone());
        self.instances[i] = Some(process);
    }
}

impl System {
    /// Partitions of the issue topic that no running consumer holds, by the last assignment each
    /// live instance logged. Not empty while messages wait: the consumer group stalled. Tansu
    /// 0.6.0 does this after a consumer is SIGKILLed and another joins (it keeps the dead
    /// member's partitions assigned to it for good), so such a schedule is the development
    /// broker's failure, with this as the evidence.
    pub fn unassigned_partitions(&self) -> Vec<i32> {
        let mut held = BTreeSet::new();
        for process in self.instances.iter().flatten() {
            let log = std::fs::read_to_string(&process.log).unwrap_or_default();
            let last = log
                .lines()
                .rev()
                .find(|l| l.contains("partitions assigned"));
            let revoked_after = last.is_some_and(|last| {
                log.lines()
                    .rev()
                    .take_while(|l| *l != last)
                    .any(|l| l.contains("partitions revoked"))
            });
            if let (Some(line), false) = (last, revoked_after) {
                let list = line.rsplit_once('[').map_or("", |(_, l)| l);
                let list = list.split(']').next().unwrap_or_default();
                held.extend(list.split(',').filter_map(|p| p.trim().parse::<i32>().ok()));
            }
        }
        (0..self.settings.kafka.partitions)
            .filter(|p| !held.contains(p))
            .collect()
    }

    /// A test handle (tokens, the test's database, typed calls) on instance `i` as it runs now.
    pub async fn observer(&self, i: usize) -> crate::helpers::TestApp {
        let process = self.instances[i].as_ref().expect("instance running");
        crate::helpers::observe(self.settings.clone(), process).await
    }

    /// Makes sure nothing is left broken, whatever the schedule did.
    pub async fn heal_all(&mut self) {
        if !self.redis.is_up() {
            self.redis.restart().await;
        }
        self.broker.proxy().restore();
        for i in 0..INSTANCES {
            if !self.is_up(i) {
                self.restart_instance(i).await;
            }
        }
        for process in self.instances.iter().flatten() {
            process.listening(&[]).await;
        }
    }
}
