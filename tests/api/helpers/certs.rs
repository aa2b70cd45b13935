//! Keys and certificates a test makes for itself with the machine's `openssl`, in a directory
//! removed with it (also where a private cluster keeps its nodes' state).

use std::path::{Path, PathBuf};

pub struct KeyDir(PathBuf);

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl KeyDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("keys-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn openssl(&self, args: &[&str]) {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&self.0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl is installed");
        assert!(status.success(), "openssl {args:?}");
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.0.join(name)).unwrap()
    }

    /// A certificate authority: `<name>.pem` (certificate) and `<name>.key`.
    pub fn ca(&self, name: &str) -> PathBuf {
        let (cert, key) = (format!("{name}.pem"), format!("{name}.key"));
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &key,
            "-out",
            &cert,
        ]);
        self.0.join(cert)
    }

    /// A server certificate for `localhost` and 127.0.0.1 signed by the CA `ca`:
    /// `<name>.crt` and `<name>.key`.
    pub fn server(&self, ca: &str, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key, csr) = (
            format!("{name}.crt"),
            format!("{name}.key"),
            format!("{name}.csr"),
        );
        let ext = format!("{name}.ext");
        std::fs::write(
            self.0.join(&ext),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        self.openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &key,
            "-out",
            &csr,
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ]);
        (self.0.join(cert), self.0.join(key))
    }
}
