//! One scenario's whole stack on loopback: the testkit's fake OpenAI (answers and embeddings, at a fixed
//! latency, accepting only the keys it is told), a real OpenBao holding the provider key, a database, and the
//! real `ragvault serve` binary in its own process, plus the tenants the scenario drives.

use crate::process::{toml_string, ConfigPairs, PrivatePostgres, ServerProcess};
use ragvault_testkit::{FakeProvider, OpenBao, TestDatabase, FAKE_EMBEDDING_DIMENSION};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the provider key lives in OpenBao's KV (the `secret` mount), as `scripts/vault-bootstrap.sh` allows.
pub const PROVIDER_KEY_PATH: &str = "ragvault/providers/openai";

/// The product manuals every scenario's tenants are grounded in.
pub const MANUALS: [(&str, &str); 3] = [
    ("pump.md", "# Pump\n\nTo reset the pump, hold the reset button for ten seconds until the green light blinks. Error E-1042 means the impeller is blocked by debris."),
    ("router.md", "# Router\n\nHold the recessed reset button of the router for ten seconds until the lights blink amber. Change the Wi-Fi name under Wireless, then Basic."),
    ("heater.md", "# Heater\n\nKeep the heater one metre away from curtains. Turn the dial clockwise to raise the target temperature."),
];

pub const QUESTIONS: [&str; 4] = [
    "How do I reset the pump?",
    "What does error E-1042 mean?",
    "How do I change the Wi-Fi name?",
    "How far from curtains should the heater be?",
];

/// Which database the stack runs on.
pub enum Database {
    /// A fresh database on the machine's Postgres, dropped afterwards.
    Shared(TestDatabase),
    /// A cluster of the stack's own, for scenarios that stop and start Postgres.
    Private(PrivatePostgres),
}

impl Database {
    pub fn url(&self) -> String {
        match self {
            Database::Shared(db) => db.url.clone(),
            Database::Private(pg) => pg.url(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Tenant {
    pub id: String,
    pub api_key: String,
}

pub struct StackOptions {
    pub provider_latency: Duration,
    /// OpenBao with raft storage, so it can be killed and started again with its state.
    pub persistent_openbao: bool,
    pub private_postgres: bool,
}

/// Field order matters: the server stops before its database and OpenBao go.
pub struct Stack {
    pub server: ServerProcess,
    pub client: reqwest::Client,
    pub operator_key: String,
    pub fake: Arc<FakeProvider>,
    pub bao: OpenBao,
    /// The provider key OpenBao holds now (assembled at run time, never a literal).
    pub provider_key: String,
    pub database: Database,
    pub dir: tempfile::TempDir,
}

/// A provider key for the fake OpenAI that no scanner mistakes for a real one.
pub fn new_provider_key() -> String {
    format!("bench-{}", uuid::Uuid::new_v4().simple())
}

impl Stack {
    pub async fn start(binary: &Path, options: &StackOptions) -> Stack {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let fake = Arc::new(FakeProvider::start().await);
        fake.set_latency(options.provider_latency);
        let bao = if options.persistent_openbao {
            OpenBao::start_persistent().await
        } else {
            OpenBao::start().await
        };
        let provider_key = new_provider_key();
        fake.accept(&provider_key);
        bao.put_key(PROVIDER_KEY_PATH, &provider_key).await;
        let database = if options.private_postgres {
            Database::Private(PrivatePostgres::start())
        } else {
            Database::Shared(TestDatabase::create().await)
        };
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = server_config(&fake, &bao, &database.url(), dir.path());
        let server = ServerProcess::start(binary, dir.path(), &config).await;
        let created = server.cli(&["admin-key", "create"]);
        assert!(
            created.status.success(),
            "admin-key create failed: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        let operator_key = String::from_utf8_lossy(&created.stdout)
            .lines()
            .find_map(|line| line.strip_prefix("api_key: "))
            .expect("the CLI prints the operator key")
            .trim()
            .to_owned();
        Stack {
            server,
            client: crate::load::client(512),
            operator_key,
            fake,
            bao,
            provider_key,
            database,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// An admin call that must succeed; returns its JSON body.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.operator_key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("admin request");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    /// A production tenant with `policy`, grounded in the manuals when `with_manuals`.
    pub async fn tenant(&self, slug: &str, policy: Option<Value>, with_manuals: bool) -> Tenant {
        let created = self
            .admin(
                reqwest::Method::POST,
                "/v1/admin/tenants",
                Some(json!({"slug": slug, "environment": "production"})),
            )
            .await;
        let tenant = Tenant {
            id: created["id"].as_str().expect("tenant id").to_owned(),
            api_key: created["api_key"].as_str().expect("api key").to_owned(),
        };
        if with_manuals {
            for (name, text) in MANUALS {
                let job = self.submit_document(&tenant, name, text).await;
                let status = self
                    .wait_for_job(&tenant, &job, Duration::from_secs(60))
                    .await;
                assert_eq!(status, "done", "ingest of {name}");
            }
        }
        if let Some(policy) = policy {
            self.admin(
                reqwest::Method::PATCH,
                &format!("/v1/admin/tenants/{}", tenant.id),
                Some(json!({ "policy": policy })),
            )
            .await;
        }
        tenant
    }

    /// `POST /v1/documents`; returns the job id.
    pub async fn submit_document(&self, tenant: &Tenant, name: &str, text: &str) -> String {
        let response = self
            .client
            .post(self.url("/v1/documents"))
            .bearer_auth(&tenant.api_key)
            .json(&json!({"name": name, "content": text, "content_type": "text/markdown"}))
            .send()
            .await
            .expect("ingest request");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 202, "ingest refused: {body}");
        body["job_id"].as_str().expect("job id").to_owned()
    }

    /// Waits for a job to leave `queued`/`running`; returns its final status (or the last seen one).
    pub async fn wait_for_job(&self, tenant: &Tenant, job: &str, patience: Duration) -> String {
        let deadline = Instant::now() + patience;
        let mut status = String::new();
        while Instant::now() < deadline {
            if let Ok(response) = self
                .client
                .get(self.url(&format!("/v1/jobs/{job}")))
                .bearer_auth(&tenant.api_key)
                .send()
                .await
            {
                if let Ok(body) = response.json::<Value>().await {
                    status = body["status"].as_str().unwrap_or_default().to_owned();
                    if status == "done" || status == "failed" {
                        return status;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        status
    }

    /// `GET /readyz`: its status and body.
    pub async fn readiness(&self) -> (u16, Value) {
        match self
            .client
            .get(self.url("/readyz"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }
}

/// The server's whole configuration: Vault for keys, the fake OpenAI for answers and query embeddings (so
/// the local model's CPU time does not crowd the measurement), a price for both models.
fn server_config(
    fake: &FakeProvider,
    bao: &OpenBao,
    database_url: &str,
    dir: &Path,
) -> ConfigPairs {
    let prices = dir.join("prices.toml");
    std::fs::write(
        &prices,
        "[openai.\"gpt-4o-mini\"]\ninput = 1\noutput = 2\n[openai.\"fake-embed\"]\ninput = 1\noutput = 0\n",
    )
    .expect("price table");
    let path = |p: PathBuf| toml_string(&p.display().to_string());
    let mut config: ConfigPairs = vec![
        ("data_dir".into(), path(dir.join("data"))),
        ("database.url".into(), toml_string(database_url)),
        ("database.max_connections".into(), "32".into()),
        ("pricing.file".into(), path(prices)),
        (
            "providers.openai.base_url".into(),
            toml_string(&fake.base_url),
        ),
        ("providers.openai.model".into(), toml_string("gpt-4o-mini")),
        ("embedding.provider".into(), toml_string("openai")),
        ("embedding.model".into(), toml_string("fake-embed")),
        (
            "embedding.dimension".into(),
            FAKE_EMBEDDING_DIMENSION.to_string(),
        ),
        (
            "embedding.model_dir".into(),
            path(ragvault_embedding::model_dir_from_env()),
        ),
        ("generation.chain".into(), "[\"openai\"]".into()),
        ("http.request_timeout_secs".into(), "60".into()),
        ("vault.request_timeout_ms".into(), "1000".into()),
        ("log.level".into(), toml_string("warn")),
        ("log.format".into(), toml_string("json")),
    ];
    config.extend(bao.settings_overrides());
    config
}
