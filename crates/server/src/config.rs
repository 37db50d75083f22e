//! Layered configuration: built-in `config/default.toml`, then the file named by `RAGVAULT_CONFIG`, then
//! `DATABASE_URL` / `VAULT_ADDR`, then `RAGVAULT__SECTION__KEY` variables. Loading is pure; nothing is
//! opened or connected until the whole configuration has been validated.

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const DEFAULTS: &str = include_str!("../../../config/default.toml");
/// The price table built into the binary, used when `pricing.file` is not set.
const BUILT_IN_PRICES: &str = include_str!("../../../config/prices.toml");

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database: DatabaseSettings,
    pub credentials: CredentialsSettings,
    pub vault: VaultSettings,
    pub http: HttpSettings,
    pub log: LogSettings,
    #[serde(default)]
    pub tracing: TracingSettings,
    pub ingest: IngestSettings,
    pub embedding: EmbeddingSettings,
    pub index: IndexSettings,
    pub search: SearchSettings,
    pub generation: GenerationSettings,
    #[serde(default)]
    pub pricing: PricingSettings,
    #[serde(default)]
    pub widget: WidgetSettings,
    #[serde(default)]
    pub budget: BudgetSettings,
    #[serde(default)]
    pub policies: PolicySettings,
    #[serde(default)]
    pub retention: RetentionSettings,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderSettings>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// A directory of `<tenant-slug>.toml` policy files, applied at start and on SIGHUP.
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// How often documents past their tenant's `retention_days` are looked for (and once at start).
    pub sweep_interval_secs: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            sweep_interval_secs: 3600,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetSettings {
    /// Budget a replica leases from Postgres at once and spends in memory (capped at a twentieth of the
    /// tenant's budget). Larger: fewer database round trips; smaller: less held back from other replicas.
    pub slice_micro_usd: u64,
    /// The unspent slices of tenants that reserved nothing since the last pass go back to Postgres this often
    /// (all slices at shutdown).
    pub return_interval_secs: u64,
    /// Monthly budget of sandbox tenants whose policy sets none.
    pub sandbox_monthly_micro_usd: u64,
    /// Where each soft threshold crossing is POSTed (signed with the `budget-webhook` key); none = no webhook.
    pub soft_threshold_webhook_url: Option<String>,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        BudgetSettings {
            slice_micro_usd: 100_000,
            return_interval_secs: 5,
            sandbox_monthly_micro_usd: 5_000_000,
            soft_threshold_webhook_url: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WidgetSettings {
    /// Lifetime of a widget token minted without `ttl_seconds`.
    pub default_ttl_secs: u64,
    /// Longest lifetime a token may ask for; also how long a retired signing key keeps verifying.
    pub max_ttl_secs: u64,
    /// Browser origins (`https://shop.example`) that may call `/v1/ask` with a widget token: CORS answers
    /// for these only, and a token can be bound only to one of them.
    pub allowed_origins: Vec<String>,
}

impl Default for WidgetSettings {
    fn default() -> Self {
        WidgetSettings {
            default_ttl_secs: 600,
            max_ttl_secs: 3600,
            allowed_origins: Vec::new(),
        }
    }
}

impl WidgetSettings {
    pub fn token_settings(&self) -> ragvault_gateway::WidgetTokenSettings {
        ragvault_gateway::WidgetTokenSettings {
            default_ttl: Duration::from_secs(self.default_ttl_secs),
            max_ttl: Duration::from_secs(self.max_ttl_secs),
            allowed_origins: self.allowed_origins.clone(),
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.default_ttl_secs == 0 || self.default_ttl_secs > self.max_ttl_secs {
            problems
                .push("widget.default_ttl_secs: must be between 1 and widget.max_ttl_secs".into());
        }
        if self.max_ttl_secs > 24 * 3600 {
            problems
                .push("widget.max_ttl_secs: at most 86400 (widget tokens are short-lived)".into());
        }
        for origin in &self.allowed_origins {
            if !is_origin(origin) {
                problems.push(format!(
                    "widget.allowed_origins: `{origin}` is not an origin (scheme://host[:port], no path or trailing slash)"
                ));
            }
        }
        problems
    }
}

/// `http(s)://host[:port]` exactly as browsers send it in `Origin`.
fn is_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        && !rest.bytes().any(|b| b.is_ascii_uppercase())
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingSettings {
    /// A price table replacing the built-in `config/prices.toml` (USD per million tokens per provider and
    /// model). Every configured model must have a price.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationSettings {
    /// Providers tried in order when a tenant's policy names no `failover_chain`: `local` (the extractive
    /// answerer) or names of `[providers.NAME]` entries that have a `model`.
    pub chain: Vec<String>,
    pub max_output_tokens: u32,
    pub temperature: f32,
    /// Longer queries are refused with 413 `query_too_large`.
    pub max_query_chars: usize,
    pub connect_timeout_ms: u64,
    pub first_token_timeout_secs: u64,
    pub total_timeout_secs: u64,
    /// Attempts per provider for retryable failures (429, 502/503/504, connection refused) before failover.
    pub attempts: u32,
    /// Failures in a row that open a provider's circuit breaker, and how long it stays open.
    pub breaker_failures: u32,
    pub breaker_cool_down_secs: u64,
    /// PII replaced before text leaves for a provider (email, phone, card, iban, ip).
    pub pii_categories: Vec<ragvault_generation::PiiCategory>,
    /// Extra patterns: name = regular expression; the placeholder is `<NAME_n>`.
    #[serde(default)]
    pub pii_patterns: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    pub workers: usize,
    /// Uploads one tenant may have waiting; beyond this its uploads are refused with 429.
    pub queue_capacity: usize,
    /// Uploads all tenants together may have waiting; beyond this every upload is refused with 429.
    pub total_queue_capacity: usize,
    pub chunk_target_tokens: usize,
    pub chunk_max_tokens: usize,
    pub chunk_overlap_tokens: usize,
    /// Longest one document may take to parse before its job fails with `parse_timeout`.
    pub parse_timeout_secs: u64,
    /// An OpenAI-compatible `[providers.NAME]` entry whose `/audio/transcriptions` (Whisper) turns audio
    /// uploads into text; without one, audio is refused with 415.
    pub transcription_provider: Option<String>,
    pub transcription_model: String,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IndexBackend {
    /// hnsw_rs graphs on local disk (one per tenant partition).
    Embedded,
    /// A Qdrant server (`index.qdrant_url` or `QDRANT_URL`), shared by replicas.
    Qdrant,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexSettings {
    pub backend: IndexBackend,
    /// Embedded index files; defaults to `<data_dir>/index`.
    pub dir: Option<PathBuf>,
    pub max_connections: usize,
    pub ef_construction: usize,
    /// Embedded index: hnsw_rs's candidate extension while linking a new node (better graphs on clustered
    /// data for a little build time).
    pub extend_candidates: bool,
    /// Default search breadth (raised to at least k per query).
    pub ef_search: usize,
    /// Graphs with changes are dumped this often (and at shutdown); the WAL covers the time between.
    pub dump_interval_secs: u64,
    pub rebuild_tombstone_ratio: f64,
    /// Qdrant's gRPC URL (e.g. `http://qdrant:6334`); `QDRANT_URL` overrides it.
    pub qdrant_url: Option<String>,
    /// Collections are `<prefix>_d<dimension>`.
    pub qdrant_collection_prefix: String,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SearchMode {
    Vector,
    Keyword,
    Hybrid,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSettings {
    pub mode: SearchMode,
    pub default_top_k: usize,
    pub max_top_k: usize,
    /// Reciprocal rank fusion: each list adds `weight / (rrf_k + rank)`.
    pub rrf_k: f32,
    pub vector_weight: f32,
    pub keyword_weight: f32,
    /// Candidates each list contributes to fusion, as a multiple of top_k.
    pub candidate_factor: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingSettings {
    /// Directory with the local model's files (`tokenizer.json`, `model.safetensors`, `config.json`),
    /// as `scripts/fetch-model.sh` lays them out. Its tokenizer also sizes chunks with a remote embedder.
    pub model_dir: PathBuf,
    /// Engine of the local model: `auto` (ONNX Runtime when `libonnxruntime.so` is in `model_dir`, else
    /// candle), `onnxruntime` (refuse to start without it) or `candle`.
    pub runtime: ragvault_embedding::LocalRuntime,
    /// `local` (all-MiniLM-L6-v2 in process), or the name of an OpenAI-compatible entry under `[providers]`
    /// whose `/embeddings` endpoint makes the vectors (key leased as that provider's key).
    pub provider: String,
    /// Remote model name and its vector width (both required with a remote provider).
    pub model: Option<String>,
    pub dimension: Option<usize>,
    /// Texts per remote request.
    pub max_batch: usize,
    pub request_timeout_secs: u64,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    /// `static`: the login in `database.url` / `DATABASE_URL`. `vault`: short-lived logins leased from
    /// Vault's database secrets engine (`vault.database_mount`/creds/`vault.database_role`).
    pub credentials: DatabaseCredentials,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatabaseCredentials {
    Static,
    Vault,
}

/// The URL may carry a password (from `DATABASE_URL`), so Debug shows only where it points.
impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url_password(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout_ms", &self.acquire_timeout_ms)
            .field("credentials", &self.credentials)
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialsBackend {
    Local,
    Vault,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsSettings {
    pub backend: CredentialsBackend,
    #[serde(default)]
    pub master_key_file: Option<PathBuf>,
    /// The sealed provider keyring of the local backend; defaults to `<data_dir>/providers.sealed`.
    #[serde(default)]
    pub keyring_file: Option<PathBuf>,
    /// Refresh interval of provider key leases.
    pub lease_soft_ttl_secs: u64,
    /// How long a lease keeps serving while the key source is unreachable.
    pub lease_hard_ttl_secs: u64,
    pub lease_jitter: f64,
    /// How long an unwrapped data key stays in memory (reads keep working this long while Vault is away).
    pub dek_cache_ttl_secs: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultSettings {
    pub addr: String,
    pub role_id: String,
    pub secret_id_file: String,
    /// The file holds a response-wrapping token for the secret_id (unwrapped once at start).
    pub secret_id_wrapped: bool,
    pub approle_mount: String,
    pub kv_mount: String,
    pub transit_mount: String,
    pub database_mount: String,
    pub database_role: String,
    pub request_timeout_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub body_limit_bytes: usize,
    pub request_timeout_secs: u64,
    pub shutdown_grace_secs: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// OpenTelemetry trace export; off unless `otlp_endpoint` is set.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingSettings {
    /// The collector's OTLP/HTTP URL (`http://jaeger:4318`); spans are exported as protobuf to `/v1/traces`.
    pub otlp_endpoint: Option<String>,
    pub service_name: String,
    /// Fraction of new traces kept (a caller's sampled `traceparent` is always followed).
    pub sample_ratio: f64,
    pub export_delay_ms: u64,
    pub export_timeout_ms: u64,
    /// Debug only: adds the pseudonymized question as a `prompt` span. Never on in production: traces then
    /// hold user text.
    pub debug_record_prompts: bool,
}

impl Default for TracingSettings {
    fn default() -> Self {
        TracingSettings {
            otlp_endpoint: None,
            service_name: "ragvault".to_owned(),
            sample_ratio: 1.0,
            export_delay_ms: 2000,
            export_timeout_ms: 5000,
            debug_record_prompts: false,
        }
    }
}

impl TracingSettings {
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(endpoint) = &self.otlp_endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                problems
                    .push("tracing.otlp_endpoint: must be an http:// or https:// URL".to_owned());
            }
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            problems.push("tracing.sample_ratio: must be between 0 and 1".to_owned());
        }
        if self.export_delay_ms == 0 || self.export_timeout_ms == 0 {
            problems
                .push("tracing.export_delay_ms, export_timeout_ms: must be at least 1".to_owned());
        }
        problems
    }

    pub fn otlp_export(&self) -> Option<ragvault_telemetry::OtlpExport> {
        self.otlp_endpoint
            .as_ref()
            .map(|endpoint| ragvault_telemetry::OtlpExport {
                endpoint: endpoint.clone(),
                service_name: self.service_name.clone(),
                sample_ratio: self.sample_ratio,
                export_delay: std::time::Duration::from_millis(self.export_delay_ms),
                export_timeout: std::time::Duration::from_millis(self.export_timeout_ms),
            })
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    pub base_url: String,
    /// Wire format: `openai`, `openai_compatible` (vLLM, llama.cpp, Ollama...), `mistral`, `anthropic` or
    /// `gemini`.
    #[serde(default)]
    pub api: ragvault_generation::ProviderApi,
    /// Chat model, for providers in a failover chain.
    #[serde(default)]
    pub model: Option<String>,
    /// The chat model's context window in tokens (sources are trimmed to fit).
    #[serde(default = "default_context_tokens")]
    pub context_tokens: usize,
    /// Where the provider processes requests (`us`, `eu`, ...: the operator's label, e.g. `eu` for OpenAI's
    /// European data residency endpoint), matched against tenant policies' `allowed_regions`.
    #[serde(default)]
    pub region: Option<String>,
}

fn default_context_tokens() -> usize {
    128_000
}

impl ProviderSettings {
    /// The embedding wire format of this entry, if it has one (Anthropic has no embeddings API).
    pub fn embedding_api(&self) -> Option<ragvault_embedding::RemoteApi> {
        use ragvault_generation::ProviderApi;
        match self.api {
            ProviderApi::Openai | ProviderApi::OpenaiCompatible | ProviderApi::Mistral => {
                Some(ragvault_embedding::RemoteApi::Openai)
            }
            ProviderApi::Gemini => Some(ragvault_embedding::RemoteApi::Gemini),
            ProviderApi::Anthropic => None,
        }
    }
}

/// Everything wrong with a configuration, each problem naming its key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("RAGVAULT_CONFIG names {0}, which does not exist")]
    MissingFile(PathBuf),
    #[error("configuration: {0}")]
    Parse(String),
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
}

impl Settings {
    /// Loads from the process environment.
    pub fn load() -> Result<Settings, ConfigError> {
        let file = std::env::var_os("RAGVAULT_CONFIG").map(PathBuf::from);
        Self::load_from(file.as_deref(), &[])
    }

    /// Loads with an optional config file, then the environment, then explicit overrides (for tests and
    /// the CLI): each override is a dotted key and a TOML value.
    pub fn load_from(
        file: Option<&Path>,
        overrides: &[(&str, &str)],
    ) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile(path.to_owned()));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "database.url".into()),
            )
            .merge(
                Env::raw()
                    .only(&["VAULT_ADDR"])
                    .map(|_| "vault.addr".into()),
            )
            .merge(
                Env::raw()
                    .only(&["QDRANT_URL"])
                    .map(|_| "index.qdrant_url".into()),
            )
            .merge(Env::prefixed("RAGVAULT__").split("__"));
        for (key, value) in overrides {
            let toml = format!("{key} = {value}");
            figment = figment.merge(Toml::string(&toml));
        }
        let settings: Settings = figment
            .extract()
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        let mut problems = settings.problems();
        if let Some(problem) = password_in_file(file) {
            problems.push(problem);
        }
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Whether `name` can stand in a failover chain, and if not, why.
    pub fn chain_member_problem(&self, name: &str) -> Option<String> {
        if name == "local" {
            return None;
        }
        match self.providers.get(name) {
            None => Some(format!(
                "`{name}` is neither \"local\" nor a configured [providers.{name}] entry"
            )),
            Some(p) if p.model.as_deref().is_none_or(str::is_empty) => Some(format!(
                "[providers.{name}] needs a `model` to answer questions"
            )),
            Some(_) => None,
        }
    }

    fn generation_problems(&self) -> Vec<String> {
        let generation = &self.generation;
        let mut problems = Vec::new();
        if generation.chain.is_empty() {
            problems.push(
                "generation.chain: name at least one provider (\"local\" needs no key)".into(),
            );
        }
        for name in &generation.chain {
            if let Some(problem) = self.chain_member_problem(name) {
                problems.push(format!("generation.chain: {problem}"));
            }
        }
        if generation.max_output_tokens == 0 || generation.max_query_chars == 0 {
            problems.push(
                "generation.max_output_tokens and generation.max_query_chars: must be at least 1"
                    .into(),
            );
        }
        if !(0.0..=2.0).contains(&generation.temperature) {
            problems.push("generation.temperature: must be between 0 and 2".into());
        }
        if generation.connect_timeout_ms == 0
            || generation.first_token_timeout_secs == 0
            || generation.total_timeout_secs == 0
            || generation.attempts == 0
            || generation.breaker_failures == 0
        {
            problems.push(
                "generation timeouts, attempts and breaker_failures: must be at least 1".into(),
            );
        }
        for (name, pattern) in &generation.pii_patterns {
            if let Err(e) = regex::Regex::new(pattern) {
                problems.push(format!("generation.pii_patterns.{name}: {e}"));
            }
        }
        for (name, provider) in &self.providers {
            if provider.context_tokens < 1024 {
                problems.push(format!(
                    "providers.{name}.context_tokens: must be at least 1024"
                ));
            }
        }
        problems
    }

    /// Every problem with the values, as `key: what is wrong`. Pure: touches no file or network.
    fn problems(&self) -> Vec<String> {
        let mut problems = self.widget.problems();
        problems.extend(self.tracing.problems());
        let url = &self.database.url;
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            problems.push("database.url: must be a postgres:// or postgresql:// URL".to_owned());
        }
        if self.database.max_connections == 0 {
            problems.push("database.max_connections: must be at least 1".to_owned());
        }
        if self.database.acquire_timeout_ms == 0 {
            problems.push("database.acquire_timeout_ms: must be at least 1".to_owned());
        }
        if self.data_dir.as_os_str().is_empty() {
            problems.push("data_dir: must not be empty".to_owned());
        }
        if self.http.body_limit_bytes < 1024 {
            problems.push("http.body_limit_bytes: must be at least 1024".to_owned());
        }
        if let Some(url) = &self.budget.soft_threshold_webhook_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                problems.push(
                    "budget.soft_threshold_webhook_url: must be an http:// or https:// URL"
                        .to_owned(),
                );
            }
        }
        if self.http.request_timeout_secs == 0 {
            problems.push("http.request_timeout_secs: must be at least 1".to_owned());
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            problems.push(format!(
                "log.level: `{}` is not a valid tracing filter (try info, debug or ragvault=debug)",
                self.log.level
            ));
        }
        if self.credentials.backend == CredentialsBackend::Vault {
            let vault = &self.vault;
            if !(vault.addr.starts_with("http://") || vault.addr.starts_with("https://")) {
                problems.push("vault.addr: must be an http:// or https:// URL".to_owned());
            }
            if vault.role_id.trim().is_empty() {
                problems.push(
                    "vault.role_id: required when credentials.backend = \"vault\"".to_owned(),
                );
            }
            if vault.secret_id_file.trim().is_empty() {
                problems.push(
                    "vault.secret_id_file: required when credentials.backend = \"vault\" (a file holding the AppRole secret_id)"
                        .to_owned(),
                );
            }
            for (key, mount) in [
                ("vault.approle_mount", &vault.approle_mount),
                ("vault.kv_mount", &vault.kv_mount),
                ("vault.transit_mount", &vault.transit_mount),
                ("vault.database_mount", &vault.database_mount),
                ("vault.database_role", &vault.database_role),
            ] {
                if mount.is_empty() || mount.contains(['/', ' ']) {
                    problems.push(format!("{key}: must be a mount name without slashes"));
                }
            }
            if vault.request_timeout_ms == 0 {
                problems.push("vault.request_timeout_ms: must be at least 1".to_owned());
            }
        }
        if self.database.credentials == DatabaseCredentials::Vault
            && self.credentials.backend != CredentialsBackend::Vault
        {
            problems.push(
                "database.credentials: `vault` needs credentials.backend = \"vault\"".to_owned(),
            );
        }
        let ingest = &self.ingest;
        if let Some(provider) = &ingest.transcription_provider {
            if !self.providers.contains_key(provider) {
                problems.push(format!(
                    "ingest.transcription_provider: `{provider}` is not a configured [providers.{provider}] entry"
                ));
            }
        }
        if ingest.parse_timeout_secs == 0 {
            problems.push("ingest.parse_timeout_secs: must be at least 1".to_owned());
        }
        if ingest.workers == 0 || ingest.queue_capacity == 0 {
            problems
                .push("ingest.workers and ingest.queue_capacity: must be at least 1".to_owned());
        }
        if ingest.total_queue_capacity < ingest.queue_capacity {
            problems.push(
                "ingest.total_queue_capacity: must be at least ingest.queue_capacity".to_owned(),
            );
        }
        if !(1..=512).contains(&ingest.chunk_max_tokens)
            || ingest.chunk_target_tokens == 0
            || ingest.chunk_target_tokens > ingest.chunk_max_tokens
            || ingest.chunk_overlap_tokens >= ingest.chunk_target_tokens
        {
            problems
                .push("ingest.chunk_*_tokens: need 0 <= overlap < target <= max <= 512".to_owned());
        }
        let embedding = &self.embedding;
        if embedding.provider != "local" {
            if !self.providers.contains_key(&embedding.provider) {
                problems.push(format!(
                    "embedding.provider: `{}` is neither \"local\" nor a configured [providers.{}] entry",
                    embedding.provider, embedding.provider
                ));
            }
            if embedding.model.as_deref().is_none_or(str::is_empty)
                || embedding.dimension.is_none_or(|d| d == 0)
            {
                problems.push("embedding.model and embedding.dimension: required with a remote embedding.provider".to_owned());
            }
        }
        if let Some(provider) = self.providers.get(&embedding.provider) {
            if provider.embedding_api().is_none() {
                problems.push(format!(
                    "embedding.provider: `{}` uses an API without embeddings",
                    embedding.provider
                ));
            }
        }
        problems.extend(self.generation_problems());
        if embedding.max_batch == 0 || embedding.request_timeout_secs == 0 {
            problems.push(
                "embedding.max_batch and embedding.request_timeout_secs: must be at least 1"
                    .to_owned(),
            );
        }
        let index = &self.index;
        if !(2..=256).contains(&index.max_connections) {
            problems.push("index.max_connections: must be between 2 and 256".to_owned());
        }
        if index.ef_construction == 0 || index.ef_search == 0 {
            problems
                .push("index.ef_construction and index.ef_search: must be at least 1".to_owned());
        }
        if index.backend == IndexBackend::Qdrant
            && index
                .qdrant_url
                .as_deref()
                .is_none_or(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            problems.push(
                "index.qdrant_url: an http(s):// URL is required with index.backend = \"qdrant\" (or set QDRANT_URL)"
                    .to_owned(),
            );
        }
        if index.dump_interval_secs == 0 {
            problems.push("index.dump_interval_secs: must be at least 1".to_owned());
        }
        if !(0.0..=1.0).contains(&index.rebuild_tombstone_ratio) {
            problems.push("index.rebuild_tombstone_ratio: must be between 0 and 1".to_owned());
        }
        let search = &self.search;
        if search.default_top_k == 0
            || search.default_top_k > search.max_top_k
            || search.max_top_k > 200
        {
            problems.push(
                "search.default_top_k and search.max_top_k: need 1 <= default <= max <= 200"
                    .to_owned(),
            );
        }
        if search.rrf_k <= 0.0 || search.vector_weight < 0.0 || search.keyword_weight < 0.0 {
            problems.push("search.rrf_k must be positive and the weights not negative".to_owned());
        }
        if search.candidate_factor == 0 {
            problems.push("search.candidate_factor: must be at least 1".to_owned());
        }
        let creds = &self.credentials;
        if creds.lease_soft_ttl_secs == 0 {
            problems.push("credentials.lease_soft_ttl_secs: must be at least 1".to_owned());
        }
        if creds.lease_hard_ttl_secs < creds.lease_soft_ttl_secs {
            problems.push(
                "credentials.lease_hard_ttl_secs: must be at least credentials.lease_soft_ttl_secs"
                    .to_owned(),
            );
        }
        if creds.dek_cache_ttl_secs == 0 {
            problems.push("credentials.dek_cache_ttl_secs: must be at least 1".to_owned());
        }
        if !(0.0..=0.5).contains(&creds.lease_jitter) {
            problems.push("credentials.lease_jitter: must be between 0 and 0.5".to_owned());
        }
        for name in self.providers.keys() {
            if ragvault_credentials::validate_provider_name(name).is_err() {
                problems.push(format!(
                    "providers.{name}: provider names are 1-32 lowercase letters, digits, - or _"
                ));
            }
        }
        for (name, provider) in &self.providers {
            let base = &provider.base_url;
            if !(base.starts_with("https://") || base.starts_with("http://")) {
                problems.push(format!(
                    "providers.{name}.base_url: must be an http:// or https:// URL"
                ));
            }
        }
        match self.price_table() {
            Ok(prices) => problems.extend(self.unpriced_models(&prices)),
            Err(e) => problems.push(format!("pricing.file: {e}")),
        }
        problems
    }

    /// Where prices come from, for messages: the configured file or the built-in table.
    fn price_origin(&self) -> String {
        match &self.pricing.file {
            Some(path) => path.display().to_string(),
            None => "config/prices.toml (built in)".to_owned(),
        }
    }

    /// The price table every provider call is metered with.
    pub fn price_table(&self) -> Result<ragvault_gateway::PriceTable, String> {
        let origin = self.price_origin();
        let text = match &self.pricing.file {
            Some(path) => {
                std::fs::read_to_string(path).map_err(|e| format!("cannot read {origin}: {e}"))?
            }
            None => BUILT_IN_PRICES.to_owned(),
        };
        ragvault_gateway::PriceTable::parse(&text, &origin).map_err(|e| e.to_string())
    }

    /// Every configured remote model must be priced: an unpriced call would be metered as free.
    fn unpriced_models(&self, prices: &ragvault_gateway::PriceTable) -> Vec<String> {
        let origin = self.price_origin();
        let mut models: Vec<(String, &str, String)> = self
            .providers
            .iter()
            .filter_map(|(name, p)| {
                p.model
                    .as_deref()
                    .map(|m| (name.clone(), m, format!("providers.{name}.model")))
            })
            .collect();
        if let (true, Some(model)) = (
            self.embedding.provider != "local",
            self.embedding.model.as_deref(),
        ) {
            models.push((
                self.embedding.provider.clone(),
                model,
                "embedding.model".to_owned(),
            ));
        }
        models
            .into_iter()
            .filter(|(provider, model, _)| prices.price(provider, model).is_none())
            .map(|(provider, model, key)| {
                format!(
                    "{key}: {origin} has no price for provider `{provider}` model `{model}` \
                     (add [{provider}.\"{model}\"] with input and output in USD per million tokens)"
                )
            })
            .collect()
    }

    pub fn index_dir(&self) -> PathBuf {
        self.index
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("index"))
    }

    pub fn master_key_file(&self) -> PathBuf {
        self.credentials
            .master_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("master.key"))
    }

    pub fn keyring_file(&self) -> PathBuf {
        self.credentials
            .keyring_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("providers.sealed"))
    }

    pub fn lease_settings(&self) -> ragvault_credentials::LeaseSettings {
        let soft = Duration::from_secs(self.credentials.lease_soft_ttl_secs);
        ragvault_credentials::LeaseSettings {
            soft_ttl: soft,
            hard_ttl: Duration::from_secs(self.credentials.lease_hard_ttl_secs),
            jitter: self.credentials.lease_jitter,
            // Look for due leases often enough that a refresh is never late by more than a few percent.
            tick: (soft / 10).clamp(Duration::from_millis(100), Duration::from_secs(5)),
        }
    }

    pub fn vault_config(&self) -> ragvault_credentials::VaultConfig {
        ragvault_credentials::VaultConfig {
            addr: self.vault.addr.clone(),
            role_id: self.vault.role_id.clone(),
            secret_id_file: PathBuf::from(&self.vault.secret_id_file),
            secret_id_wrapped: self.vault.secret_id_wrapped,
            approle_mount: self.vault.approle_mount.clone(),
            kv_mount: self.vault.kv_mount.clone(),
            transit_mount: self.vault.transit_mount.clone(),
            request_timeout: Duration::from_millis(self.vault.request_timeout_ms),
        }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.http.request_timeout_secs)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.http.shutdown_grace_secs)
    }

    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.database.acquire_timeout_ms)
    }
}

/// A database password written into a config file is a secret in a config file: refuse it and say where
/// it belongs instead. Checks the file itself, so the file is refused even when the environment overrides it.
fn password_in_file(file: Option<&Path>) -> Option<String> {
    let url: String = Figment::from(Toml::file(file?))
        .extract_inner("database.url")
        .ok()?;
    url_has_password(&url).then(|| {
        "database.url: contains a password, and config files must hold no secrets; \
         set DATABASE_URL or use a ~/.pgpass file"
            .to_owned()
    })
}

fn url_has_password(url: &str) -> bool {
    userinfo(url).is_some_and(|info| info.contains(':'))
}

fn userinfo(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    authority.rsplit_once('@').map(|(info, _)| info)
}

/// `postgres://user:pw@host/db` -> `postgres://user:[redacted]@host/db`.
pub fn redact_url_password(url: &str) -> String {
    match (url.split_once("://"), userinfo(url)) {
        (Some((scheme, rest)), Some(info)) if info.contains(':') => {
            let user = info.split(':').next().unwrap_or_default();
            let after = &rest[info.len()..];
            format!("{scheme}://{user}:[redacted]{after}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load(overrides: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::load_from(None, overrides)
    }

    /// docker-compose.yml configures ragvault through `RAGVAULT__*` variables: they must name real keys with
    /// valid values, or the container would refuse to start.
    #[test]
    fn the_compose_files_settings_load() {
        let compose = include_str!("../../../docker-compose.yml");
        let mut overrides: Vec<(String, String)> = Vec::new();
        for line in compose.lines().map(str::trim) {
            let Some((name, value)) = line.split_once(": ") else {
                continue;
            };
            let Some(path) = name.strip_prefix("RAGVAULT__") else {
                continue;
            };
            let key = path.to_lowercase().replace("__", ".");
            let value = if value.parse::<f64>().is_ok() || value == "true" || value == "false" {
                value.to_owned()
            } else {
                format!("\"{value}\"")
            };
            overrides.push((key, value));
        }
        assert!(overrides.len() >= 5, "{overrides:?}");
        let borrowed: Vec<(&str, &str)> = overrides
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let settings = load(&borrowed).unwrap();
        assert_eq!(settings.credentials.backend, CredentialsBackend::Vault);
        assert_eq!(settings.index.backend, IndexBackend::Qdrant);
        assert_eq!(
            settings.tracing.otlp_endpoint.as_deref(),
            Some("http://jaeger:4318")
        );
    }

    #[test]
    fn trace_export_is_off_by_default_and_bad_values_are_named() {
        let settings = load(&[]).unwrap();
        assert!(settings.tracing.otlp_export().is_none());
        for (key, value, named) in [
            (
                "tracing.otlp_endpoint",
                "\"jaeger:4318\"",
                "tracing.otlp_endpoint",
            ),
            ("tracing.sample_ratio", "1.5", "tracing.sample_ratio"),
            ("tracing.export_delay_ms", "0", "tracing.export_delay_ms"),
        ] {
            let error = load(&[(key, value)]).unwrap_err().to_string();
            assert!(error.contains(named), "{key}: {error}");
        }
    }

    #[test]
    fn defaults_are_valid() {
        let settings = load(&[]).unwrap();
        assert_eq!(settings.credentials.backend, CredentialsBackend::Local);
        assert!(settings.master_key_file().ends_with("master.key"));
    }

    #[test]
    fn reports_every_bad_key_by_name() {
        let err = load(&[
            ("database.url", "\"mysql://x\""),
            ("http.request_timeout_secs", "0"),
            ("providers.openai.base_url", "\"ftp://x\""),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("database.url"), "{err}");
        assert!(err.contains("http.request_timeout_secs"), "{err}");
        assert!(err.contains("providers.openai.base_url"), "{err}");
    }

    #[test]
    fn every_configured_model_needs_a_price() {
        let err = load(&[
            ("providers.acme.base_url", "\"http://127.0.0.1:9\""),
            ("providers.acme.model", "\"acme-large\""),
            ("providers.openai.base_url", "\"https://api.openai.com/v1\""),
            ("providers.openai.model", "\"gpt-4o-mini\""),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("providers.acme.model"), "{err}");
        assert!(err.contains("config/prices.toml (built in)"), "{err}");
        assert!(err.contains("[acme.\"acme-large\"]"), "{err}");
        assert!(!err.contains("providers.openai.model"), "priced: {err}");

        // A table of one's own replaces the built-in one; its faults name the file, the key and the reason.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prices.toml");
        std::fs::write(&file, "[acme.\"acme-large\"]\ninput = 1.5\noutput = -2\n").unwrap();
        let file_value = format!("{:?}", file.display().to_string());
        let err = load(&[
            ("providers.acme.base_url", "\"http://127.0.0.1:9\""),
            ("providers.acme.model", "\"acme-large\""),
            ("pricing.file", &file_value),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(&format!(
                "{}: acme.\"acme-large\".output: must be a price of zero or more",
                file.display()
            )),
            "{err}"
        );
        std::fs::write(&file, "[acme.\"acme-large\"]\ninput = 1.5\noutput = 2\n").unwrap();
        let settings = load(&[
            ("providers.acme.base_url", "\"http://127.0.0.1:9\""),
            ("providers.acme.model", "\"acme-large\""),
            ("pricing.file", &file_value),
        ])
        .unwrap();
        let prices = settings.price_table().unwrap();
        assert_eq!(
            prices
                .cost_micro_usd("acme", "acme-large", 1_000_000, 500_000)
                .unwrap(),
            2_500_000
        );
        // The built-in table no longer applies.
        assert!(prices.price("openai", "gpt-4o-mini").is_none());
    }

    #[test]
    fn vault_backend_needs_its_settings() {
        let err = load(&[
            ("credentials.backend", "\"vault\""),
            ("vault.addr", "\"vault:8200\""),
            ("credentials.lease_hard_ttl_secs", "1"),
        ])
        .unwrap_err()
        .to_string();
        for key in [
            "vault.addr",
            "vault.role_id",
            "vault.secret_id_file",
            "credentials.lease_hard_ttl_secs",
        ] {
            assert!(err.contains(key), "{key} missing from: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = load(&[("http.body_limit", "5")]).unwrap_err().to_string();
        assert!(err.contains("body_limit"), "{err}");
    }

    #[test]
    fn refuses_a_password_in_a_config_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "[database]\nurl = \"postgres://app:hunter2@db/ragvault\""
        )
        .unwrap();
        let err = Settings::load_from(Some(file.path()), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("database.url"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn names_a_missing_config_file() {
        let err = Settings::load_from(Some(Path::new("/nonexistent/ragvault.toml")), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/ragvault.toml"), "{err}");
    }

    #[test]
    fn debug_redacts_the_database_password() {
        let settings = load(&[("database.url", "\"postgres://app:hunter2@db:5432/x\"")]).unwrap();
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(
            debug.contains("postgres://app:[redacted]@db:5432/x"),
            "{debug}"
        );
    }

    #[test]
    fn redaction_leaves_urls_without_password_alone() {
        assert_eq!(
            redact_url_password("postgres://u@h/db"),
            "postgres://u@h/db"
        );
        assert_eq!(redact_url_password("postgres://h/db"), "postgres://h/db");
        assert_eq!(
            redact_url_password("postgres://u:p@w@h/db"),
            "postgres://u:[redacted]@h/db"
        );
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// The checked-in production example must stay loadable as the configuration evolves.
    #[test]
    fn production_example_is_valid() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/production.example.toml");
        let settings = Settings::load_from(Some(&path), &[]).unwrap();
        assert_eq!(settings.log.format, LogFormat::Json);
    }
}
