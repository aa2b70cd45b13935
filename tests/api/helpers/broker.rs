//! A Tansu broker of the test's own, with `sqlite://` storage, so it can be killed and
//! restarted without losing what it acknowledged.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{eventually, free_port};

pub struct DurableBroker {
    child: Option<Child>,
    dir: PathBuf,
    pub port: u16,
}

impl DurableBroker {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("tansu-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut broker = Self {
            child: None,
            dir,
            port: free_port(),
        };
        broker.run().await;
        broker
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL, then the same storage and port again.
    pub async fn restart(&mut self) {
        let mut child = self.child.take().unwrap();
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        self.run().await;
    }

    async fn run(&mut self) {
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::File::create(self.dir.join("tansu.log")).unwrap();
        // Tansu puts a relative sqlite path under its working directory.
        let child = Command::new("tansu")
            .current_dir(&self.dir)
            .args(["broker", "--storage-engine", "sqlite://tansu.db"])
            .args([
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &listener,
            ])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("tansu is installed (scripts/services.sh up installs it)");
        self.child = Some(child);
        let address = self.address();
        eventually("the broker to listen", Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(&address).await.ok()
        })
        .await;
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
