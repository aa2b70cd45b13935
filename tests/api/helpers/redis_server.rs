//! A `redis-server` of the test's own, for tests that change server-wide state (`SCRIPT FLUSH`,
//! restarts) which a parallel test on the shared server could undo or suffer from.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{eventually, free_port, until_listening};

pub struct PrivateRedis {
    child: Option<Child>,
    pub port: u16,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A server with extra `redis-server` arguments (`--replicaof`, …).
    pub async fn start_with(args: &[&str]) -> Self {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            // A replica (re)syncs at once instead of waiting for more replicas to join.
            .args(["--repl-diskless-sync-delay", "0"])
            .args(args)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed");
        until_redis_answers(
            "the private redis-server",
            &format!("redis://127.0.0.1:{port}"),
        )
        .await;
        Self {
            child: Some(child),
            port,
        }
    }

    /// A server that speaks only TLS on `port`, with `cert`/`key` signed by `ca`; clients need
    /// no certificate of their own.
    pub async fn with_tls(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
    ) -> Self {
        Self::with_tls_and(cert, key, ca, &[]).await
    }

    /// TLS only, with more arguments (a cluster node's).
    pub async fn with_tls_and(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
        extra: &[&str],
    ) -> Self {
        let port = free_port();
        let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--tls-auth-clients",
                "no",
            ])
            .args(["--tls-cert-file", &path(cert), "--tls-key-file", &path(key)])
            .args(["--tls-ca-cert-file", &path(ca)])
            .args(extra)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed");
        until_listening("the TLS redis-server", port, Duration::from_secs(10)).await;
        Self {
            child: Some(child),
            port,
        }
    }

    /// SIGKILL: the server dies with whatever it had not replicated.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("the server is running");
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url()).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    }

    /// `PING`s the server answered since its stats were last reset (`CONFIG RESETSTAT`).
    pub async fn pings(&self) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.connection().await)
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_ping:calls="))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_default()
    }

    /// `SCRIPT FLUSH`: the server forgets every cached script.
    pub async fn flush_scripts(&self) {
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut self.connection().await)
            .await
            .unwrap();
    }

    /// Whether the server has the script `code` cached (`SCRIPT EXISTS`).
    pub async fn has_script(&self, code: &str) -> bool {
        let exists: Vec<bool> = redis::cmd("SCRIPT")
            .arg("EXISTS")
            .arg(redis::Script::new(code).get_hash())
            .query_async(&mut self.connection().await)
            .await
            .unwrap();
        exists[0]
    }
}

impl PrivateRedis {
    /// SIGSTOP: the server stops answering (and replicating) without closing a connection.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().and_then(Child::id).expect("running");
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }
}

/// Waits (at most 10 s) until the Redis server at `url` answers `PING`.
pub async fn until_redis_answers(what: &str, url: &str) {
    eventually(what, Duration::from_secs(10), || async {
        let client = redis::Client::open(url).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    })
    .await;
}
