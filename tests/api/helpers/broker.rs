//! A Tansu broker of the test's own, with `sqlite://` storage, so it can be killed and
//! restarted without losing what it acknowledged.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{free_port, until_listening, Stunnel, TcpProxy};

pub struct DurableBroker {
    child: Option<Child>,
    dir: PathBuf,
    pub port: u16,
    /// When the broker sits behind a proxy: every client, whatever address it was given,
    /// reaches the broker through it, because the broker advertises the proxy's address.
    proxy: Option<TcpProxy>,
    /// Clients must log in (SASL).
    authentication: bool,
}

impl DurableBroker {
    pub async fn start() -> Self {
        Self::launch(None).await
    }

    /// A broker that every client reaches through a `TcpProxy` the test can hold or cut.
    pub async fn behind_proxy() -> Self {
        let (listener, port) = TcpProxy::bind().await;
        let mut broker = Self::launch(Some(port)).await;
        broker.proxy = Some(TcpProxy::on(listener, format!("127.0.0.1:{}", broker.port)));
        broker
    }

    /// A broker that clients reach over TLS only: it advertises the port of a TLS terminator
    /// in front of it (`cert`/`key`), returned with it.
    pub async fn behind_tls(cert: &std::path::Path, key: &std::path::Path) -> (Self, Stunnel) {
        let tls_port = free_port();
        let broker = Self::launch(Some(tls_port)).await;
        let tls = Stunnel::start(tls_port, broker.port, cert, key).await;
        (broker, tls)
    }

    /// A broker whose clients must log in with SASL (SCRAM), with one user made for them.
    pub async fn with_user(name: &str, password: &str) -> Self {
        // The user is made while the broker is open (its CLI does not log in), then the broker
        // starts again on the same storage requiring a login.
        let mut broker = Self::prepared();
        broker.run(broker.port).await;
        let made = Command::new("tansu")
            .args(["user", "create", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", broker.port))
            .args(["--mechanism", "scram512", name, password])
            .output()
            .await
            .expect("tansu is installed");
        assert!(
            made.status.success(),
            "tansu user create: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        broker.kill().await;
        broker.authentication = true;
        broker.run(broker.port).await;
        broker
    }

    fn prepared() -> Self {
        let dir = std::env::temp_dir().join(format!("tansu-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            child: None,
            dir,
            port: free_port(),
            proxy: None,
            authentication: false,
        }
    }

    async fn launch(advertised: Option<u16>) -> Self {
        let mut broker = Self::prepared();
        broker.run(advertised.unwrap_or(broker.port)).await;
        broker
    }

    /// The address clients are given.
    pub fn address(&self) -> String {
        match &self.proxy {
            Some(proxy) => proxy.address(),
            None => format!("127.0.0.1:{}", self.port),
        }
    }

    pub fn proxy(&self) -> &TcpProxy {
        self.proxy.as_ref().expect("started behind_proxy")
    }

    /// SIGKILL: what the broker acknowledged stays in its storage.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("the broker is running");
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }

    /// Starts the killed broker again on the same storage and port.
    pub async fn resume(&mut self) {
        let advertised = self.proxy.as_ref().map_or(self.port, |p| p.port);
        self.run(advertised).await;
    }

    async fn run(&mut self, advertised: u16) {
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{advertised}");
        let log = std::fs::File::create(self.dir.join("tansu.log")).unwrap();
        // Tansu puts a relative sqlite path under its working directory.
        let child = Command::new("tansu")
            .current_dir(&self.dir)
            .args(["broker", "--storage-engine", "sqlite://tansu.db"])
            .args(self.authentication.then_some("--authentication"))
            .args([
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &advertised,
            ])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("tansu is installed (scripts/services.sh up installs it)");
        self.child = Some(child);
        until_listening("the broker", self.port, Duration::from_secs(30)).await;
    }
}

impl Drop for DurableBroker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            child.start_kill().ok();
        }
        std::fs::remove_dir_all(&self.dir).ok();
    }
}
