//! A PostgreSQL server of the test's own (initdb in a temporary directory), for what the shared
//! one cannot be made to do: here, TLS with a certificate the test made. Runs as the `postgres`
//! user when the tests run as root (the server refuses root).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{free_port, until_listening};

pub struct PrivatePostgres {
    _child: Child,
    dir: PathBuf,
    pub port: u16,
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest server binaries of the OS packages.
fn bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    versions.sort();
    versions.last().unwrap().join("bin").join(name)
}

/// The user the server runs as: `postgres` under root, else whoever runs the tests.
fn owner() -> Option<(u32, u32)> {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .ok()?
        .stdout
        == b"0\n";
    if !root {
        return None;
    }
    let id = |flag: &str| -> Option<u32> {
        let out = std::process::Command::new("id")
            .args([flag, "postgres"])
            .output()
            .ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

fn as_owner(command: &mut Command, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
}

fn chown(path: &Path, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

impl PrivatePostgres {
    /// A server with `ssl=on`, serving `cert` and `key` (PEM), trust authentication.
    pub async fn with_tls(cert: &Path, key: &Path) -> Self {
        let owner = owner();
        let dir = std::env::temp_dir().join(format!("pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        chown(&dir, owner);
        let data = dir.join("data");
        let mut initdb = Command::new(bin("initdb"));
        initdb
            .args([
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_owner(&mut initdb, owner);
        assert!(initdb.status().await.unwrap().success(), "initdb");
        for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
            let target = data.join(to);
            std::fs::copy(from, &target).unwrap();
            chown(&target, owner);
            std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
        }
        let port = free_port();
        let mut server = Command::new(bin("postgres"));
        server
            .args(["-D", data.to_str().unwrap(), "-p", &port.to_string()])
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                &format!("unix_socket_directories={}", dir.display()),
            ])
            .args([
                "-c",
                "ssl=on",
                "-c",
                "ssl_cert_file=server.crt",
                "-c",
                "ssl_key_file=server.key",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        as_owner(&mut server, owner);
        let child = server.spawn().expect("postgres starts");
        until_listening("the private PostgreSQL", port, Duration::from_secs(30)).await;
        Self {
            _child: child,
            dir,
            port,
        }
    }
}
