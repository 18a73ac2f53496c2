//! Shared by the admin-port tests and benchmark: the real daemon started on port 0 with a
//! temporary config, accounts made through the CLI, and an HTTPS client that trusts exactly the
//! box's self-signed admin certificate.

// Each user of this module needs a different part of it.
#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const PASSWORD: &str = "correct horse battery staple";

/// The models directory the tests use: `$EDGE_SCRIBE_MODELS_DIR`, else the repository's.
pub fn models_dir() -> PathBuf {
    std::env::var_os("EDGE_SCRIBE_MODELS_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models"))
}

pub fn add_user(config: &Path, name: &str, role: &str) {
    let mut add = Command::new(env!("CARGO_BIN_EXE_edge-scribe"))
        .args(["users", "add", "--username", name, "--role", role])
        .arg("--password-stdin")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(add.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(add.wait().unwrap().success(), "users add {name}");
}

pub fn base_config(work: &Path, extra: &str) -> String {
    format!(
        "[storage]\ndata_dir = {data:?}\n[models]\ndir = {models:?}\n[drafting]\nuse_llm = false\n\
         [review]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\nhealth_check_s = 5\n\
         [log]\nlevel = \"info\"\n{extra}",
        data = work.join("data"),
        models = models_dir(),
    )
}

pub struct Daemon {
    pub child: Child,
    pub data: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(work: &Path, config: &Path, name: &str) -> Daemon {
        let data = work.join("data");
        for file in ["admin.addr", "review.addr"] {
            let _ = std::fs::remove_file(data.join(file));
        }
        let log = work.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_edge-scribe"))
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut daemon = Daemon { child, data, log };
        daemon.addr("admin.addr");
        daemon.addr("review.addr");
        daemon
    }

    pub fn addr(&mut self, file: &str) -> SocketAddr {
        let started = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(self.data.join(file)) {
                if let Ok(addr) = text.trim().parse() {
                    return addr;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the daemon exited ({status}):\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(started.elapsed() < Duration::from_secs(60), "no {file}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the daemon did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTPS client that trusts exactly the box's admin certificate.
pub struct Admin {
    pub base: String,
    pub agent: ureq::Agent,
    pub token: Option<String>,
}

pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

impl Admin {
    pub fn new(addr: SocketAddr, data: &Path) -> Admin {
        use ureq::tls::{Certificate, RootCerts, TlsConfig};
        let pem = std::fs::read(data.join("admin-tls/cert.pem")).unwrap();
        let roots: Vec<Certificate<'static>> = pem_certificates(&pem)
            .into_iter()
            .map(|der| Certificate::from_der(&der).to_owned())
            .collect();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .tls_config(
                TlsConfig::builder()
                    .root_certs(RootCerts::new_with_certs(&roots))
                    .build(),
            )
            .build()
            .new_agent();
        Admin {
            base: format!("https://127.0.0.1:{}", addr.port()),
            agent,
            token: None,
        }
    }

    pub fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Answer {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = self
            .agent
            .run(request.body(body.to_vec()).unwrap())
            .expect("the admin port answers over TLS");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response
            .into_body()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_vec()
            .unwrap();
        Answer {
            status,
            content_type,
            bytes,
        }
    }

    pub fn get(&self, path: &str) -> Answer {
        self.send("GET", path, None, b"")
    }
    pub fn json(&self, method: &str, path: &str, body: &Value) -> Answer {
        self.send(
            method,
            path,
            Some("application/json"),
            body.to_string().as_bytes(),
        )
    }
    pub fn put_config(&self, text: &str) -> Answer {
        self.send(
            "PUT",
            "/admin/v1/config",
            Some("application/toml"),
            text.as_bytes(),
        )
    }
    pub fn sign_in(&mut self, user: &str) {
        let answer = self.json(
            "POST",
            "/admin/v1/token",
            &json!({"username": user, "password": PASSWORD}),
        );
        assert_eq!(answer.status, 200, "{}", answer.text());
        self.token = Some(answer.json()["token"].as_str().unwrap().to_owned());
    }
}

/// DER certificates of a PEM file (a tiny parser: base64 between the markers).
pub fn pem_certificates(pem: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine;
    let text = String::from_utf8_lossy(pem);
    text.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .filter_map(|block| block.split("-----END CERTIFICATE-----").next())
        .map(|b64| {
            let clean: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(clean)
                .unwrap()
        })
        .collect()
}
