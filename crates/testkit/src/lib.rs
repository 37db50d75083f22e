//! Test harness (dev-only). `spawn_app()` starts the real server on a random port, against a Postgres
//! database created for that test and dropped afterwards, with its own data directory, so tests run in
//! parallel without sharing state.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod browser;
mod database;
mod fake_provider;
pub mod http;
mod logs;
mod openbao;
pub mod otlp;

pub use database::TestDatabase;
pub use fake_provider::{
    fake_embedding, FakeProvider, StreamFault, DEFAULT_REPLY, FAKE_EMBEDDING_DIMENSION,
};
pub use logs::{captured_logs, log_to_stderr, SharedBuffer};
pub use openbao::{OpenBao, OpenBaoOptions};

use ragvault_gateway::RequestContext;
use ragvault_server::{Application, ServerError, Settings};
use ragvault_store::Store;
use serde_json::Value;
use std::net::SocketAddr;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server and everything it owns; dropping it stops the server and drops the database.
pub struct TestApp {
    pub address: SocketAddr,
    pub base_url: String,
    pub client: reqwest::Client,
    /// An operator key created directly through the key source, for `/v1/admin/*`.
    pub operator_key: String,
    pub store: Store,
    pub key_source: std::sync::Arc<ragvault_credentials::KeySource>,
    pub settings: Settings,
    /// The running service's state (indexer, content, pipeline) for tests that reach behind the API.
    pub state: ragvault_server::AppState,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), ServerError>>>,
    // Field order matters: the server stops before the database is dropped and the directory removed.
    pub database: TestDatabase,
    pub data_dir: tempfile::TempDir,
}

/// A tenant created through the admin API.
#[derive(Clone, Debug)]
pub struct TestTenant {
    pub id: String,
    pub slug: String,
    pub api_key: String,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Spawns with extra configuration overrides (dotted key, TOML value), applied last.
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_in(TestDatabase::create().await, overrides).await
}

/// Spawns on a database the test prepared itself (for example with another owner).
pub async fn spawn_app_in(database: TestDatabase, overrides: &[(&str, &str)]) -> TestApp {
    logs::install();
    let data_dir = tempfile::tempdir().expect("temporary data directory");
    let database_url = toml_string(&database.url);
    let data_dir_value = toml_string(&data_dir.path().display().to_string());
    let model_dir = toml_string(
        &ragvault_embedding::model_dir_from_env()
            .display()
            .to_string(),
    );
    let mut all: Vec<(&str, &str)> = vec![
        ("embedding.model_dir", &model_dir),
        ("listen", "\"127.0.0.1:0\""),
        ("database.url", &database_url),
        ("data_dir", &data_dir_value),
        ("database.max_connections", "5"),
    ];
    all.extend_from_slice(overrides);
    let prices_file = data_dir.path().join("test-prices.toml");
    let prices_value = toml_string(&prices_file.display().to_string());
    if !overrides.iter().any(|(key, _)| *key == "pricing.file") {
        std::fs::write(&prices_file, test_price_table(overrides)).expect("test price table");
        all.push(("pricing.file", &prices_value));
    }
    let settings = Settings::load_from(None, &all).expect("test configuration is valid");
    let running = start(&settings).await;
    let operator = running
        .state
        .access
        .create_operator_key(
            Some("testkit".to_owned()),
            None,
            &RequestContext::new("testkit", None),
        )
        .await
        .expect("operator key");
    let operator_key = operator.api_key.expose_secret().clone();
    TestApp {
        address: running.address,
        base_url: format!("http://{}", running.address),
        client: reqwest::Client::new(),
        operator_key,
        store: running.state.store.clone(),
        key_source: running.state.key_source.clone(),
        settings,
        state: running.state,
        shutdown: Some(running.shutdown),
        server: Some(running.server),
        database,
        data_dir,
    }
}

struct Running {
    address: SocketAddr,
    state: ragvault_server::AppState,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<Result<(), ServerError>>,
}

async fn start(settings: &Settings) -> Running {
    let app = Application::build(settings.clone())
        .await
        .expect("application starts");
    let address = app.local_addr();
    let state = app.state().clone();
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = shutdown_rx.await;
    }));
    Running {
        address,
        state,
        shutdown,
        server,
    }
}

/// What every model a test configures costs, in USD per million tokens: a call's cost is then
/// `input_tokens * 1 + output_tokens * 2` micro-USD per million tokens, i.e. easy to assert.
pub const TEST_PRICE_INPUT_USD: u64 = 1;
pub const TEST_PRICE_OUTPUT_USD: u64 = 2;

/// A price table for the models named in the overrides (`providers.NAME.model`, a remote
/// `embedding.provider` with its `embedding.model`), each at the test price. Tests that care about the table
/// itself set `pricing.file`.
fn test_price_table(overrides: &[(&str, &str)]) -> String {
    let value = |raw: &str| -> Option<String> {
        toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()?
            .get("v")?
            .as_str()
            .map(str::to_owned)
    };
    let mut models: Vec<(String, String)> = Vec::new();
    for (key, raw) in overrides {
        let parts: Vec<&str> = key.split('.').collect();
        if let ["providers", name, "model"] = parts.as_slice() {
            if let Some(model) = value(raw) {
                models.push(((*name).to_owned(), model));
            }
        }
    }
    let setting = |wanted: &str| {
        overrides
            .iter()
            .rev()
            .find(|(key, _)| *key == wanted)
            .and_then(|(_, raw)| value(raw))
    };
    if let (Some(provider), Some(model)) =
        (setting("embedding.provider"), setting("embedding.model"))
    {
        if provider != "local" {
            models.push((provider, model));
        }
    }
    models.sort();
    models.dedup();
    models
        .iter()
        .map(|(provider, model)| {
            format!(
                "[{provider}.{}]\ninput = {TEST_PRICE_INPUT_USD}\noutput = {TEST_PRICE_OUTPUT_USD}\n",
                toml_string(model)
            )
        })
        .collect()
}

fn toml_string(value: &str) -> String {
    serde_json::to_string(value).expect("string serialises")
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Creates a tenant through `POST /v1/admin/tenants` and returns its id and first key.
    pub async fn create_tenant(&self, slug: &str) -> TestTenant {
        let response = self
            .client
            .post(self.url("/v1/admin/tenants"))
            .bearer_auth(&self.operator_key)
            .json(&serde_json::json!({"slug": slug, "environment": "production"}))
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), 201, "tenant creation failed");
        let body: Value = response.json().await.expect("json body");
        TestTenant {
            id: body["id"].as_str().expect("id").to_owned(),
            slug: slug.to_owned(),
            api_key: body["api_key"].as_str().expect("api_key").to_owned(),
        }
    }

    /// Issues a key with the given scopes for a tenant; returns `(key_id, api_key)`.
    pub async fn issue_key(&self, tenant_id: &str, scopes: &[&str]) -> (String, String) {
        let response = self
            .client
            .post(self.url(&format!("/v1/admin/tenants/{tenant_id}/api-keys")))
            .bearer_auth(&self.operator_key)
            .json(&serde_json::json!({ "scopes": scopes }))
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), 201, "key issue failed");
        let body: Value = response.json().await.expect("json body");
        (
            body["id"].as_str().expect("id").to_owned(),
            body["api_key"].as_str().expect("api_key").to_owned(),
        )
    }

    /// Waits until the usage and audit events journaled so far are in Postgres (tests that read them from
    /// the store rather than through the API, which waits by itself).
    pub async fn settle(&self) {
        self.state.settle_metering().await;
    }

    /// Replaces a tenant's policy through `PATCH /v1/admin/tenants/{id}` and checks it was accepted.
    pub async fn set_policy(&self, tenant_id: &str, policy: Value) {
        let reply = http::call(
            self,
            reqwest::Method::PATCH,
            &format!("/v1/admin/tenants/{tenant_id}"),
            Some(&self.operator_key),
            Some(serde_json::json!({ "policy": policy })),
        )
        .await;
        assert_eq!(reply.status, 200, "policy refused: {}", reply.body);
    }

    /// Stops the server gracefully and waits for it to finish.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.server.take() {
            Some(handle) => handle.await.expect("server task"),
            None => Ok(()),
        }
    }
}

impl TestApp {
    /// Stores a provider's operator key in the local keyring and makes the service re-read it at once
    /// (`POST /v1/admin/credentials/{provider}/refresh`), as an operator adding a key after start would.
    pub async fn set_provider_key(&self, provider: &str, key: &str) {
        self.store_provider_key(provider, key);
        let response = self
            .client
            .post(self.url(&format!("/v1/admin/credentials/{provider}/refresh")))
            .bearer_auth(&self.operator_key)
            .send()
            .await
            .expect("refresh request");
        assert_eq!(
            response.status(),
            reqwest::StatusCode::OK,
            "refreshing the {provider} key"
        );
    }

    /// Writes a new version of a provider's operator key to the local keyring without telling the service:
    /// it sees the key at its next refresh, or when the provider refuses the old one (rotation).
    pub fn store_provider_key(&self, provider: &str, key: &str) {
        self.key_source
            .sealed_keyring()
            .expect("the local key source has a keyring")
            .set(
                &ragvault_credentials::operator_path(provider),
                &ragvault_credentials::Secret::new(key.to_owned()),
                None,
                None,
            )
            .expect("key stored");
    }

    /// Writes a new version of a provider's sandbox key (what sandbox tenants lease) to the local keyring.
    pub fn store_sandbox_provider_key(&self, provider: &str, key: &str) {
        self.key_source
            .sealed_keyring()
            .expect("the local key source has a keyring")
            .set(
                &ragvault_credentials::sandbox_path(provider),
                &ragvault_credentials::Secret::new(key.to_owned()),
                None,
                None,
            )
            .expect("key stored");
    }

    /// Stops the service and starts a new one on the same database, data directory and configuration (on a
    /// new port). `crash: true` aborts it like `kill -9` would, with no shutdown work (no index dump);
    /// otherwise it shuts down gracefully.
    pub async fn restart(&mut self, crash: bool) {
        if let Some(server) = self.server.take() {
            if crash {
                server.abort();
                let _ = server.await;
            } else {
                if let Some(tx) = self.shutdown.take() {
                    let _ = tx.send(());
                }
                server
                    .await
                    .expect("server task")
                    .expect("graceful shutdown");
            }
        }
        let running = start(&self.settings).await;
        self.address = running.address;
        self.base_url = format!("http://{}", running.address);
        self.store = running.state.store.clone();
        self.key_source = running.state.key_source.clone();
        self.state = running.state;
        self.shutdown = Some(running.shutdown);
        self.server = Some(running.server);
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// A slug no other test uses.
pub fn unique_slug(prefix: &str) -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &suffix[..10])
}

/// A test key for a provider, accepted by a fake once [`FakeProvider::accept`]ed. Assembled at run time:
/// no credential-shaped literal in the repository.
pub fn provider_key_for(provider: &str) -> String {
    format!("{}-{}", provider, "k".repeat(24))
}

/// An app whose providers `(name, api)` all point at one fake (model `<name>-model`), each with a key the
/// fake accepts; `extra` are further configuration overrides.
pub async fn app_with_providers(
    fake: &FakeProvider,
    providers: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> TestApp {
    let mut overrides: Vec<(String, String)> = Vec::new();
    for (name, api) in providers {
        let base = if *api == "gemini" {
            fake.gemini_base_url()
        } else {
            fake.base_url.clone()
        };
        overrides.push((format!("providers.{name}.base_url"), format!("\"{base}\"")));
        overrides.push((format!("providers.{name}.api"), format!("\"{api}\"")));
        overrides.push((
            format!("providers.{name}.model"),
            format!("\"{name}-model\""),
        ));
    }
    for (k, v) in extra {
        overrides.push(((*k).to_owned(), (*v).to_owned()));
    }
    let borrowed: Vec<(&str, &str)> = overrides
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let app = spawn_app_with(&borrowed).await;
    for (name, _) in providers {
        fake.accept(&provider_key_for(name));
        app.set_provider_key(name, &provider_key_for(name)).await;
    }
    app
}
