//! A `redis-server` of the test's own, for tests that change server-wide state (`SCRIPT FLUSH`,
//! restarts) which a parallel test on the shared server could undo or suffer from.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{eventually, free_port};

pub struct PrivateRedis {
    _child: Child,
    pub port: u16,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed");
        let url = format!("redis://127.0.0.1:{port}");
        eventually("the private redis-server", Duration::from_secs(10), || async {
            let client = redis::Client::open(url.as_str()).ok()?;
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .ok()
        })
        .await;
        Self {
            _child: child,
            port,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `INFO memory`'s `number_of_cached_scripts`.
    pub async fn cached_scripts(&self) -> u64 {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("number_of_cached_scripts:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("INFO memory reports cached scripts")
    }
}
