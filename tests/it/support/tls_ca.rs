//! A private certificate authority made by the test with the `openssl` command: a CA, and a
//! server certificate it signs for 127.0.0.1 and `localhost`, in a temporary directory. For
//! servers that speak TLS (`redis-server --tls-port`) to clients that must trust that CA.
//!
//! `openssl` is looked up on PATH; Debian's `ca-certificates` depends on it, so it is there on
//! any machine that can verify a certificate. When it is missing the test fails naming the
//! package to install; it never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const MISSING: &str = "openssl is required to make the tests' private CA: apt-get install -y openssl";

pub struct PrivateCa {
    dir: tempfile::TempDir,
}

impl PrivateCa {
    /// A fresh CA and server certificate (P-256, valid for a day).
    pub fn make() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Self { dir };
        std::fs::write(
            ca.path("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .expect("write the extensions");
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        ca.openssl(
            &["req", "-x509"],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "1",
                "-subj",
                "/CN=tokenbroker test CA",
            ],
        );
        ca.openssl(
            &["req"],
            &ec,
            &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
        );
        ca.openssl(
            &["x509", "-req", "-in", "server.csr"],
            &["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"],
            &["-out", "server.pem", "-days", "1", "-extfile", "server.ext"],
        );
        ca
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.path("ca.pem")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.path("server.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.path("server.key")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `openssl` with these arguments in the CA's directory; panics with its output on failure.
    fn openssl(&self, a: &[&str], b: &[&str], c: &[&str]) {
        let output = Command::new("openssl")
            .args(a.iter().chain(b).chain(c))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{MISSING} (cannot run it: {e})"));
        assert!(
            output.status.success(),
            "openssl {a:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The directory holding every file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
