//! Vault / OpenBao over HTTP (vaultrs): AppRole login, token renewal, KV v2 reads.
//!
//! The token and the secret_id never leave this module; reads return provider keys already wrapped in
//! [`Secret`].

use crate::error::RevokedState;
use crate::{CredentialsError, Secret};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::RwLock;
use vaultrs::api::kv2::requests::ReadSecretRequest;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use zeroize::Zeroize;

/// How to reach and log in to Vault. Holds paths and ids, never secrets.
#[derive(Clone, Debug)]
pub struct VaultConfig {
    pub addr: String,
    pub role_id: String,
    pub secret_id_file: PathBuf,
    /// The file holds a response-wrapping token to unwrap once, not the secret_id itself.
    pub secret_id_wrapped: bool,
    pub approle_mount: String,
    pub kv_mount: String,
    pub transit_mount: String,
    pub request_timeout: Duration,
}

/// A KV v2 read.
pub(crate) enum KvRead {
    Found {
        data: serde_json::Map<String, serde_json::Value>,
        version: u64,
    },
    Revoked(RevokedState),
}

struct TokenState {
    client: Arc<VaultClient>,
    /// When the token stops working unless renewed.
    expires_at: Instant,
    renewable: bool,
}

/// A logged-in connection to Vault that keeps its token alive.
pub struct VaultBackend {
    config: VaultConfig,
    secret_id: Secret<String>,
    state: RwLock<TokenState>,
    /// Serialises logins so a burst of 403s causes one re-login, not many.
    login_lock: tokio::sync::Mutex<()>,
    kv_reads: AtomicU64,
    logins: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for VaultBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultBackend")
            .field("addr", &self.config.addr)
            .finish_non_exhaustive()
    }
}

fn install_crypto_provider() {
    // vaultrs is built without a bundled TLS crypto provider; use ring, which the rest of the crate uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn status_of(err: &ClientError) -> Option<u16> {
    match err {
        ClientError::APIError { code, .. } => Some(*code),
        ClientError::RestClientError {
            source: rustify::errors::ClientError::ServerResponseError { code, .. },
        } => Some(*code),
        _ => None,
    }
}

/// A short reason for an unavailable Vault that cannot contain secrets: status codes and error kinds only.
fn outage_reason(err: &ClientError) -> String {
    match status_of(err) {
        Some(code) => format!("HTTP {code}"),
        None => match err {
            ClientError::RestClientError { .. } => {
                "no answer (connection failed or timed out)".to_owned()
            }
            ClientError::JsonParseError { .. } => "unparseable response".to_owned(),
            _ => "client error".to_owned(),
        },
    }
}

impl VaultBackend {
    /// Reads the secret_id file (unwrapping it if configured), logs in, and returns the connection.
    pub async fn connect(config: VaultConfig) -> Result<VaultBackend, CredentialsError> {
        install_crypto_provider();
        if !(config.addr.starts_with("http://") || config.addr.starts_with("https://")) {
            return Err(CredentialsError::VaultConfig(
                "vault.addr must be an http:// or https:// URL".to_owned(),
            ));
        }
        let mut raw = tokio::fs::read_to_string(&config.secret_id_file)
            .await
            .map_err(|source| CredentialsError::SecretIdFile {
                path: config.secret_id_file.clone(),
                source,
            })?;
        let token_or_id = Secret::new(raw.trim().to_owned());
        raw.zeroize();
        if token_or_id.expose_secret().is_empty() {
            return Err(CredentialsError::VaultConfig(format!(
                "the secret_id file {} is empty",
                config.secret_id_file.display()
            )));
        }
        let secret_id = if config.secret_id_wrapped {
            unwrap_secret_id(&config, &token_or_id).await?
        } else {
            token_or_id
        };
        let client = Arc::new(new_client(&config, "")?);
        let backend = VaultBackend {
            config,
            secret_id,
            state: RwLock::new(TokenState {
                client,
                expires_at: Instant::now(),
                renewable: false,
            }),
            login_lock: tokio::sync::Mutex::new(()),
            kv_reads: AtomicU64::new(0),
            logins: AtomicU64::new(0),
            last_error: Mutex::new(None),
        };
        backend.login().await?;
        Ok(backend)
    }

    pub fn config(&self) -> &VaultConfig {
        &self.config
    }

    /// Number of KV reads so far (for single-flight checks and metrics).
    pub fn kv_reads(&self) -> u64 {
        self.kv_reads.load(Ordering::Relaxed)
    }

    /// Number of AppRole logins so far.
    pub fn logins(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    fn record_error(&self, error: Option<&CredentialsError>) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = error.map(|e| e.to_string());
        }
    }

    async fn login(&self) -> Result<(), CredentialsError> {
        let _guard = self.login_lock.lock().await;
        let anonymous = new_client(&self.config, "")?;
        let result = vaultrs::auth::approle::login(
            &anonymous,
            &self.config.approle_mount,
            &self.config.role_id,
            self.secret_id.expose_secret(),
        )
        .await;
        let auth = match result {
            Ok(auth) => auth,
            Err(e) => {
                let err = match status_of(&e) {
                    Some(code @ (400 | 403)) => CredentialsError::LoginRefused {
                        addr: self.config.addr.clone(),
                        status: Some(code),
                        secret_id_file: self.config.secret_id_file.clone(),
                    },
                    _ => CredentialsError::VaultUnavailable {
                        addr: self.config.addr.clone(),
                        reason: format!("login failed: {}", outage_reason(&e)),
                    },
                };
                self.record_error(Some(&err));
                return Err(err);
            }
        };
        let mut token = auth.client_token;
        let client = new_client(&self.config, &token);
        token.zeroize();
        let client = Arc::new(client?);
        let mut state = self.state.write().await;
        *state = TokenState {
            client,
            expires_at: Instant::now() + Duration::from_secs(auth.lease_duration),
            renewable: auth.renewable,
        };
        self.logins.fetch_add(1, Ordering::Relaxed);
        self.record_error(None);
        tracing::info!(addr = %self.config.addr, ttl_secs = auth.lease_duration, "logged in to Vault with AppRole");
        Ok(())
    }

    async fn client(&self) -> Arc<VaultClient> {
        self.state.read().await.client.clone()
    }

    /// The logged-in client, for transit calls made by the key-encryption code in this crate.
    pub(crate) async fn transit_client(&self) -> Arc<VaultClient> {
        self.client().await
    }

    /// Keeps the token alive: renews at about two thirds of its lifetime, logs in again when renewal fails
    /// or the token was revoked, and backs off while Vault is unreachable. Runs until the task is dropped.
    pub async fn maintain_token(self: Arc<Self>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let (expires_at, renewable) = {
                let state = self.state.read().await;
                (state.expires_at, state.renewable)
            };
            let remaining = expires_at.saturating_duration_since(Instant::now());
            tokio::time::sleep(remaining * 2 / 3).await;
            let renewed = if renewable {
                self.renew().await
            } else {
                Err(CredentialsError::VaultConfig(
                    "token is not renewable".to_owned(),
                ))
            };
            let outcome = match renewed {
                Ok(()) => Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, "Vault token renewal failed; logging in again");
                    self.login().await
                }
            };
            match outcome {
                Ok(()) => backoff = Duration::from_secs(1),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_secs = backoff.as_secs(), "Vault login failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    async fn renew(&self) -> Result<(), CredentialsError> {
        let client = self.client().await;
        let auth = vaultrs::token::renew_self(&*client, None)
            .await
            .map_err(|e| CredentialsError::VaultUnavailable {
                addr: self.config.addr.clone(),
                reason: format!("token renewal failed: {}", outage_reason(&e)),
            })?;
        let mut state = self.state.write().await;
        state.expires_at = Instant::now() + Duration::from_secs(auth.lease_duration);
        state.renewable = auth.renewable;
        tracing::debug!(ttl_secs = auth.lease_duration, "renewed Vault token");
        Ok(())
    }

    /// Checks that Vault answers and the token is valid.
    pub async fn check(&self) -> Result<(), CredentialsError> {
        let client = self.client().await;
        match vaultrs::token::lookup_self(&*client).await {
            Ok(_) => Ok(()),
            Err(e) => Err(CredentialsError::VaultUnavailable {
                addr: self.config.addr.clone(),
                reason: outage_reason(&e),
            }),
        }
    }

    /// Reads the current version of a KV v2 secret. A 403 (token expired or revoked) triggers one
    /// re-login and one retry.
    pub(crate) async fn read_kv(&self, path: &str) -> Result<KvRead, CredentialsError> {
        match self.read_kv_once(path).await {
            Err(CredentialsError::VaultDenied { .. }) => {
                self.login().await?;
                self.read_kv_once(path).await
            }
            other => other,
        }
    }

    async fn read_kv_once(&self, path: &str) -> Result<KvRead, CredentialsError> {
        let client = self.client().await;
        self.kv_reads.fetch_add(1, Ordering::Relaxed);
        let full_path = format!("{}/{}", self.config.kv_mount, path);
        let request = ReadSecretRequest::builder()
            .mount(&self.config.kv_mount)
            .path(path)
            .build()
            .map_err(|e| CredentialsError::VaultConfig(e.to_string()))?;
        let result = vaultrs::api::exec_with_result(&*client, request).await;
        match result {
            Ok(response) => {
                let data = match response.data {
                    serde_json::Value::Object(map) => map,
                    _ => {
                        return Err(CredentialsError::MalformedSecret {
                            path: full_path,
                            reason: "its data is not an object".to_owned(),
                        })
                    }
                };
                self.record_error(None);
                Ok(KvRead::Found {
                    data,
                    version: response.metadata.version,
                })
            }
            Err(e) => match status_of(&e) {
                Some(404) => self.revoked_state(&client, path).await.map(KvRead::Revoked),
                Some(403) => Err(CredentialsError::VaultDenied { path: full_path }),
                _ => {
                    let err = CredentialsError::VaultUnavailable {
                        addr: self.config.addr.clone(),
                        reason: outage_reason(&e),
                    };
                    self.record_error(Some(&err));
                    Err(err)
                }
            },
        }
    }

    /// After a 404 on the data, tells a deleted or destroyed version from a path that never existed.
    async fn revoked_state(
        &self,
        client: &VaultClient,
        path: &str,
    ) -> Result<RevokedState, CredentialsError> {
        match vaultrs::kv2::read_metadata(client, &self.config.kv_mount, path).await {
            Ok(meta) => {
                let version = meta.current_version;
                let state = match meta.versions.get(&version.to_string()) {
                    Some(v) if v.destroyed => RevokedState::Destroyed { version },
                    Some(v) if !v.deletion_time.is_empty() => RevokedState::Deleted { version },
                    _ => RevokedState::Missing,
                };
                Ok(state)
            }
            Err(e) if status_of(&e) == Some(404) => Ok(RevokedState::Missing),
            // The metadata is outside what this token may read: the data 404 is all we know.
            Err(e) if status_of(&e) == Some(403) => Ok(RevokedState::Missing),
            Err(e) => Err(CredentialsError::VaultUnavailable {
                addr: self.config.addr.clone(),
                reason: outage_reason(&e),
            }),
        }
    }
}

fn new_client(config: &VaultConfig, token: &str) -> Result<VaultClient, CredentialsError> {
    let settings = VaultClientSettingsBuilder::default()
        .address(&config.addr)
        .token(token)
        .timeout(Some(config.request_timeout))
        .build()
        .map_err(|e| CredentialsError::VaultConfig(e.to_string()))?;
    VaultClient::new(settings).map_err(|e| CredentialsError::VaultConfig(format!("client: {e}")))
}

async fn unwrap_secret_id(
    config: &VaultConfig,
    wrapping_token: &Secret<String>,
) -> Result<Secret<String>, CredentialsError> {
    #[derive(serde::Deserialize)]
    struct Unwrapped {
        secret_id: String,
    }
    let client = new_client(config, wrapping_token.expose_secret())?;
    match vaultrs::sys::wrapping::unwrap::<Unwrapped>(&client, None).await {
        Ok(mut unwrapped) => {
            let secret_id = Secret::new(std::mem::take(&mut unwrapped.secret_id));
            Ok(secret_id)
        }
        Err(e) => match status_of(&e) {
            Some(400 | 403) => Err(CredentialsError::VaultConfig(format!(
                "the wrapping token in {} is invalid, expired or already used",
                config.secret_id_file.display()
            ))),
            _ => Err(CredentialsError::VaultUnavailable {
                addr: config.addr.clone(),
                reason: format!("unwrap failed: {}", outage_reason(&e)),
            }),
        },
    }
}

/// Short-lived Postgres credentials from Vault's database secrets engine. The password is lent only
/// inside [`DatabaseLease::with_password`].
pub struct DatabaseLease {
    pub username: String,
    password: Secret<String>,
    pub lease_id: String,
    pub ttl: Duration,
    pub renewable: bool,
    pub obtained: Instant,
}

impl std::fmt::Debug for DatabaseLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseLease")
            .field("username", &self.username)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl DatabaseLease {
    pub fn with_password<R>(&self, use_password: impl FnOnce(&str) -> R) -> R {
        use_password(self.password.expose_secret())
    }

    pub fn expires_at(&self) -> Instant {
        self.obtained + self.ttl
    }
}

#[derive(serde::Deserialize)]
struct LeaseEnvelope<T> {
    lease_id: String,
    lease_duration: u64,
    renewable: bool,
    data: T,
}

#[derive(serde::Deserialize)]
struct DbCreds {
    username: String,
    password: String,
}

#[derive(serde::Deserialize)]
struct RenewResponse {
    lease_duration: u64,
}

impl VaultBackend {
    /// Calls a Vault endpoint that vaultrs does not cover with lease details, using this backend's token.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<reqwest::Response, CredentialsError> {
        let client = self.client().await;
        let token = Secret::new(client.settings.token.clone());
        let http = reqwest::Client::builder()
            .timeout(self.config.request_timeout)
            .build()
            .map_err(|e| CredentialsError::VaultConfig(e.to_string()))?;
        let mut request = http
            .request(
                method,
                format!("{}/v1/{path}", self.config.addr.trim_end_matches('/')),
            )
            .header("X-Vault-Token", token.expose_secret().as_str());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let unavailable = |reason: String| CredentialsError::VaultUnavailable {
            addr: self.config.addr.clone(),
            reason,
        };
        let response = request.send().await.map_err(|_| {
            unavailable(format!(
                "{path}: no answer (connection failed or timed out)"
            ))
        })?;
        match response.status().as_u16() {
            200..=299 => Ok(response),
            403 => Err(CredentialsError::VaultDenied {
                path: path.to_owned(),
            }),
            code => Err(unavailable(format!("{path}: HTTP {code}"))),
        }
    }

    /// Leases new database credentials from `<mount>/creds/<role>`.
    pub async fn lease_database_credentials(
        &self,
        mount: &str,
        role: &str,
    ) -> Result<DatabaseLease, CredentialsError> {
        let path = format!("{mount}/creds/{role}");
        let response = self.call(reqwest::Method::GET, &path, None).await?;
        let envelope: LeaseEnvelope<DbCreds> =
            response
                .json()
                .await
                .map_err(|_| CredentialsError::MalformedSecret {
                    path: path.clone(),
                    reason: "response is not a database credential lease".to_owned(),
                })?;
        let mut creds = envelope.data;
        let lease = DatabaseLease {
            username: creds.username.clone(),
            password: Secret::new(std::mem::take(&mut creds.password)),
            lease_id: envelope.lease_id,
            ttl: Duration::from_secs(envelope.lease_duration),
            renewable: envelope.renewable,
            obtained: Instant::now(),
        };
        tracing::info!(username = %lease.username, ttl_secs = lease.ttl.as_secs(), "leased database credentials");
        Ok(lease)
    }

    /// Renews a lease; returns the TTL Vault granted (less than asked once the lease nears its max TTL).
    pub async fn renew_lease(
        &self,
        lease_id: &str,
        increment: Duration,
    ) -> Result<Duration, CredentialsError> {
        let body = serde_json::json!({ "lease_id": lease_id, "increment": increment.as_secs() });
        let response = self
            .call(reqwest::Method::PUT, "sys/leases/renew", Some(body))
            .await?;
        let renewed: RenewResponse =
            response
                .json()
                .await
                .map_err(|_| CredentialsError::MalformedSecret {
                    path: "sys/leases/renew".to_owned(),
                    reason: "unparseable renewal response".to_owned(),
                })?;
        Ok(Duration::from_secs(renewed.lease_duration))
    }

    /// Revokes a lease now (for database credentials: Vault drops the Postgres role).
    pub async fn revoke_lease(&self, lease_id: &str) -> Result<(), CredentialsError> {
        let body = serde_json::json!({ "lease_id": lease_id });
        self.call(reqwest::Method::PUT, "sys/leases/revoke", Some(body))
            .await?;
        Ok(())
    }
}
