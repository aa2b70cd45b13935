//! Redis Sentinel on loopback from the machine's own `redis-server`: a master, two replicas and
//! three sentinels watching it as `fcfs`. Two replicas, so that after a failover the new master
//! still has one to confirm writes to (`APP_REDIS__ACK_REPLICAS=1`). The replicas reach the
//! master through a `TcpProxy`, so a test can stall replication: what the master writes then is
//! on no replica, as in a real lag.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{eventually, free_port, PrivateRedis, TcpProxy};

pub const MASTER_NAME: &str = "fcfs";

pub struct SentinelSet {
    pub master: PrivateRedis,
    /// Kept so they live as long as the set.
    _replicas: Vec<PrivateRedis>,
    replication: TcpProxy,
    sentinels: Vec<(Child, u16)>,
    dir: std::path::PathBuf,
}

impl Drop for SentinelSet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl SentinelSet {
    /// Starts the servers and waits until every sentinel knows the replicas and the other
    /// sentinels (they find each other through the master), so a failover can be agreed.
    pub async fn start() -> Self {
        let master = PrivateRedis::start().await;
        let primary = master.port.to_string();
        let replication = TcpProxy::start(format!("127.0.0.1:{primary}")).await;
        let through = replication.port.to_string();
        let mut replicas = Vec::new();
        for _ in 0..2 {
            replicas.push(PrivateRedis::start_with(&["--replicaof", "127.0.0.1", &through]).await);
        }
        let dir = std::env::temp_dir().join(format!("sentinel-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let config = dir.join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &config,
                format!(
                    "port {port}\nbind 127.0.0.1\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 10000\n\
                     sentinel parallel-syncs {MASTER_NAME} 2\n"
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .arg(&config)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("redis-server runs sentinels");
            sentinels.push((child, port));
        }
        let set = Self {
            master,
            _replicas: replicas,
            replication,
            sentinels,
            dir,
        };
        for (_, port) in &set.sentinels {
            let url = format!("redis://127.0.0.1:{port}");
            eventually(
                "a sentinel that sees the whole set",
                Duration::from_secs(30),
                || async {
                    let mut conn = redis::Client::open(url.as_str())
                        .ok()?
                        .get_multiplexed_async_connection()
                        .await
                        .ok()?;
                    let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
                        .arg("REPLICAS")
                        .arg(MASTER_NAME)
                        .query_async(&mut conn)
                        .await
                        .ok()?;
                    let peers: Vec<redis::Value> = redis::cmd("SENTINEL")
                        .arg("SENTINELS")
                        .arg(MASTER_NAME)
                        .query_async(&mut conn)
                        .await
                        .ok()?;
                    (replicas.len() == 2 && peers.len() == 2).then_some(())
                },
            )
            .await;
        }
        set
    }

    /// The link every replica replicates through.
    pub fn replication(&self) -> &TcpProxy {
        &self.replication
    }

    /// `APP_REDIS__NODES`.
    pub fn nodes(&self) -> String {
        self.sentinels
            .iter()
            .map(|(_, port)| format!("127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The master's port as the first sentinel names it now.
    pub async fn master_port(&self) -> u16 {
        let url = format!("redis://127.0.0.1:{}", self.sentinels[0].1);
        let mut conn = redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER_NAME)
            .query_async(&mut conn)
            .await
            .unwrap();
        port
    }
}

/// A master and one sentinel that speak TLS only (`--port 0`), the sentinel watching the master
/// over TLS too (`tls-replication yes`), all with `cert`/`key` signed by `ca`.
pub struct TlsSentinel {
    pub master: PrivateRedis,
    _sentinel: Child,
    pub port: u16,
    dir: std::path::PathBuf,
}

impl Drop for TlsSentinel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TlsSentinel {
    pub async fn start(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
    ) -> Self {
        let master = PrivateRedis::with_tls(cert, key, ca).await;
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("sentinel-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "port 0\ntls-port {port}\nbind 127.0.0.1\n\
                 tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
                 tls-auth-clients no\ntls-replication yes\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n",
                cert.display(),
                key.display(),
                ca.display(),
                master.port
            ),
        )
        .unwrap();
        let sentinel = Command::new("redis-server")
            .arg(&config)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server runs sentinels");
        super::until_listening("the TLS sentinel", port, Duration::from_secs(10)).await;
        Self {
            master,
            _sentinel: sentinel,
            port,
            dir,
        }
    }
}
