//! A TLS terminator (stunnel, a Debian package `scripts/lib.sh` installs) in front of a local
//! server that speaks none: clients talk TLS to it, it talks plaintext to the server.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{free_port, until_listening};

pub struct Stunnel {
    _child: Child,
    pub port: u16,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// Removed with the terminator.
    pub struct Dir(pub std::path::PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            std::fs::remove_dir_all(&self.0).ok();
        }
    }
}

impl Stunnel {
    /// Accepts TLS on `port` (0: a free one) with `cert`/`key`, and forwards to `target`.
    pub async fn start(port: u16, target: u16, cert: &Path, key: &Path) -> Self {
        let port = if port == 0 { free_port() } else { port };
        let dir = std::env::temp_dir().join(format!("stunnel-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("stunnel.conf");
        std::fs::write(
            &config,
            format!(
                "foreground = yes\npid =\n[tls]\naccept = 127.0.0.1:{port}\n\
                 connect = 127.0.0.1:{target}\ncert = {}\nkey = {}\n",
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("stunnel.log")).unwrap();
        let child = Command::new("stunnel")
            .arg(&config)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("stunnel is installed (scripts/lib.sh installs stunnel4)");
        until_listening("stunnel", port, Duration::from_secs(10)).await;
        Self {
            _child: child,
            port,
            _dir: tempdir::Dir(dir),
        }
    }
}
