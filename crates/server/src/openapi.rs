//! The HTTP API as an OpenAPI 3.1 document, served at `/openapi.json` and checked in as `docs/openapi.json`.
//!
//! Request bodies and query strings are described by the very types the handlers deserialize (their
//! `ToSchema`/`IntoParams` derives sit next to their `Deserialize`). Response bodies are built with `json!` in
//! the handlers, so they are described here by the types below; `tests/openapi.rs` validates real responses
//! of every route against these descriptions, with undocumented fields refused, so the two cannot drift apart.
//! The dashboard's HTML pages (`/admin/...`) are not part of the API and are left out.
#![allow(dead_code)] // The response types exist to be described, never constructed.

use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use uuid::Uuid;

/// Every error: a stable `code`, a message for people, the request id. Some errors add fields (`checks` on
/// 503 `not_ready`, `problems` on 422 `invalid_policy_file`).
#[derive(ToSchema)]
pub struct ErrorEnvelope {
    error: ErrorDetail,
    /// Readiness checks (503 `not_ready` only).
    #[schema(nullable = false)]
    checks: Option<ReadinessChecks>,
    /// Every bad policy file, key and reason (422 `invalid_policy_file` only).
    #[schema(nullable = false)]
    problems: Option<Vec<PolicyFileProblem>>,
}

#[derive(ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable (`invalid_top_k`, `budget_exceeded`, ...).
    code: String,
    message: String,
    request_id: String,
}

#[derive(ToSchema)]
pub struct PolicyFileProblem {
    file: String,
    key: String,
    reason: String,
}

#[derive(ToSchema)]
pub struct Health {
    /// `ok`
    status: String,
}

#[derive(ToSchema)]
pub struct Readiness {
    /// `ready`
    status: String,
    checks: ReadinessChecks,
}

#[derive(ToSchema)]
pub struct ReadinessChecks {
    /// `ok` or `failing`
    postgres: String,
    /// `ok`, `degraded` (Vault unreachable, leases still valid) or `failing`
    key_source: String,
    /// `local` or `vault`
    key_source_kind: String,
    /// `ok` or `failing`
    index: String,
}

/// Who the presented credential is. Tenant keys carry `tenant_id`, `tenant_slug`, `key_id`, `scopes` and
/// `groups`; widget tokens `tenant_id`, `token_id`, `subject`, `scopes` and `groups`; operator keys `key_id`.
#[derive(ToSchema)]
pub struct Whoami {
    /// `tenant`, `widget` or `operator`
    kind: String,
    #[schema(nullable = false)]
    tenant_id: Option<Uuid>,
    #[schema(nullable = false)]
    tenant_slug: Option<String>,
    #[schema(nullable = false)]
    key_id: Option<Uuid>,
    #[schema(nullable = false)]
    token_id: Option<Uuid>,
    subject: Option<String>,
    #[schema(nullable = false)]
    scopes: Option<Vec<String>>,
    /// Access groups; null = the whole tenant.
    groups: Option<Vec<String>>,
}

/// An API key as listed: never the key, never its hash.
#[derive(ToSchema)]
pub struct ApiKey {
    id: Uuid,
    tenant_id: Uuid,
    /// The non-secret lookup part of the key (`rvk_<public_id>_...`).
    public_id: String,
    name: Option<String>,
    /// `ask`, `ingest`, `admin`, `tokens`
    scopes: Vec<String>,
    /// Access groups; absent = the whole tenant.
    #[schema(nullable = false)]
    groups: Option<Vec<String>>,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
    #[schema(format = DateTime)]
    last_used_at: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
}

/// A new API key: the only response that contains the key itself (shown once).
#[derive(ToSchema)]
pub struct IssuedApiKey {
    id: Uuid,
    tenant_id: Uuid,
    public_id: String,
    name: Option<String>,
    scopes: Vec<String>,
    #[schema(nullable = false)]
    groups: Option<Vec<String>>,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
    #[schema(format = DateTime)]
    last_used_at: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    /// The key: `rvk_<public_id>_<secret>`.
    api_key: String,
}

#[derive(ToSchema)]
pub struct ApiKeyList {
    api_keys: Vec<ApiKey>,
}

#[derive(ToSchema)]
pub struct DocumentAccepted {
    /// The document this upload becomes (the live one when `unchanged`, or the one of the job it joined).
    document_id: Uuid,
    job_id: Uuid,
    /// `queued`, or `done` when `unchanged`
    status: String,
    /// The live document already has this name, content and metadata: nothing is embedded again and the
    /// job is done at once. An upload identical to one still queued is given that job instead of a new one.
    unchanged: bool,
    /// Chunks of the live document, when `unchanged`.
    chunks: Option<i32>,
}

#[derive(ToSchema)]
pub struct Job {
    id: Uuid,
    document_id: Uuid,
    /// `queued`, `running`, `done` (searchable) or `failed`
    status: String,
    attempts: i32,
    /// Chunks stored, once known.
    #[schema(nullable = false)]
    chunks: Option<i32>,
    /// Why the job failed.
    #[schema(nullable = false)]
    error: Option<JobError>,
}

#[derive(ToSchema)]
pub struct JobError {
    code: String,
    message: String,
}

/// A document as listed: its name, never its text.
#[derive(ToSchema)]
pub struct Document {
    id: Uuid,
    name: String,
    size_bytes: i64,
    chunks: i32,
    #[schema(format = DateTime)]
    created_at: String,
}

#[derive(ToSchema)]
pub struct DocumentList {
    documents: Vec<Document>,
}

#[derive(ToSchema)]
pub struct DocumentDeleted {
    id: Uuid,
    deleted: bool,
    /// Chunks (and index points) removed.
    chunks: u64,
}

#[derive(ToSchema)]
pub struct SearchResponse {
    /// `vector`, `keyword` or `hybrid`
    mode: String,
    /// The embedding model.
    model: String,
    results: Vec<SearchResult>,
}

#[derive(ToSchema)]
pub struct SearchResult {
    document_id: Uuid,
    name: String,
    /// The chunk's ordinal within its document.
    chunk: u32,
    heading_path: Vec<String>,
    score: f32,
    snippet: String,
}

/// A grounded answer. With `stream: true` the same content arrives as server-sent events `citations`,
/// `delta` (`{text}`), `usage` and `done` (or `error`).
#[derive(ToSchema)]
pub struct AskResponse {
    answer: String,
    citations: Vec<Citation>,
    usage: AnswerUsage,
    /// Providers that failed before the one that answered.
    #[schema(nullable = false)]
    failover: Option<Vec<String>>,
    /// True when nothing relevant was found (no provider was called).
    #[schema(nullable = false)]
    no_sources: Option<bool>,
    request_id: String,
}

#[derive(ToSchema)]
pub struct Citation {
    /// The marker number in the answer (`[n]`).
    n: usize,
    document_id: Uuid,
    name: String,
    chunk: u32,
    score: f32,
    snippet: String,
    /// Whether the answer carries this source's marker.
    cited: bool,
}

#[derive(ToSchema)]
pub struct AnswerUsage {
    input_tokens: u64,
    output_tokens: u64,
    cost_micro_usd: u64,
    provider: String,
    model: String,
}

/// OpenAI's `chat.completion`, with ragvault's citations under `ragvault`. With `stream: true`,
/// `chat.completion.chunk` server-sent events ending in `data: [DONE]`.
#[derive(ToSchema)]
pub struct ChatCompletion {
    id: String,
    /// `chat.completion`
    object: String,
    created: i64,
    model: String,
    choices: Vec<ChatChoice>,
    usage: ChatUsage,
    /// `citations`, `provider`, `model`, `failover`, `no_sources`.
    #[schema(value_type = Object)]
    ragvault: Value,
}

#[derive(ToSchema)]
pub struct ChatChoice {
    index: u32,
    message: ChatMessage,
    finish_reason: String,
}

#[derive(ToSchema)]
pub struct ChatMessage {
    role: String,
    content: String,
}

#[derive(ToSchema)]
pub struct ChatUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

/// A widget token, shown once: hand it to the browser; it carries scope `ask` only.
#[derive(ToSchema)]
pub struct WidgetToken {
    token: String,
    token_id: Uuid,
    #[schema(format = DateTime)]
    expires_at: String,
}

/// A tenant as operators see it.
#[derive(ToSchema)]
pub struct Tenant {
    id: Uuid,
    slug: String,
    /// `active` or `suspended`
    status: String,
    /// `production` or `sandbox`
    environment: String,
    /// The tenant's policy (see the README's policy keys).
    #[schema(value_type = Object)]
    policy: Value,
    #[schema(format = DateTime)]
    created_at: String,
}

/// A new tenant and its first API key (shown once).
#[derive(ToSchema)]
pub struct CreatedTenant {
    id: Uuid,
    slug: String,
    status: String,
    environment: String,
    #[schema(value_type = Object)]
    policy: Value,
    #[schema(format = DateTime)]
    created_at: String,
    api_key: String,
    api_key_id: Uuid,
    scopes: Vec<String>,
}

#[derive(ToSchema)]
pub struct TenantList {
    tenants: Vec<Tenant>,
}

#[derive(ToSchema)]
pub struct TenantDeleted {
    id: Uuid,
    deleted: bool,
    kek_destroyed: bool,
}

#[derive(ToSchema)]
pub struct KeyRotation {
    /// Data keys rewrapped under the new KEK.
    rewrapped: u64,
    /// The content key new writes use.
    content_key_id: Uuid,
}

#[derive(ToSchema)]
pub struct Reencryption {
    done: i64,
    total: i64,
    complete: bool,
}

#[derive(ToSchema)]
pub struct AuditPage {
    events: Vec<AuditEvent>,
    /// Pass as `after` for the next page; null at the end.
    next_after: Option<i64>,
}

#[derive(ToSchema)]
pub struct AuditEvent {
    id: i64,
    /// Position in the hash chain.
    seq: i64,
    #[schema(format = DateTime)]
    at: String,
    tenant_id: Option<Uuid>,
    actor: String,
    action: String,
    target: Option<String>,
    request_id: Option<String>,
    #[schema(value_type = Object)]
    details: Value,
}

#[derive(ToSchema)]
pub struct AuditVerification {
    intact: bool,
    checked: i64,
    head_seq: Option<i64>,
    first_bad_seq: Option<i64>,
    problem: Option<String>,
}

#[derive(ToSchema)]
pub struct IndexVerification {
    /// Every partition holds exactly its tenant's chunks.
    consistent: bool,
    tenants: Vec<IndexPartitionCheck>,
}

#[derive(ToSchema)]
pub struct IndexPartitionCheck {
    tenant_id: Uuid,
    /// Chunks in Postgres.
    in_postgres: u64,
    /// Points in the tenant's index partition.
    in_index: u64,
    /// Chunks without a point.
    missing: u64,
    /// Points without a chunk.
    stale: u64,
}

#[derive(ToSchema)]
pub struct UsageReport {
    #[schema(format = Date)]
    from: String,
    #[schema(format = Date)]
    to: String,
    /// `day`, `model`, `provider` or `day_model`
    group_by: String,
    rows: Vec<UsageRow>,
    total_cost_micro_usd: i64,
}

/// Totals of one group; the grouping decides which of `day`, `provider`, `model` are present.
#[derive(ToSchema)]
pub struct UsageRow {
    tenant_id: Uuid,
    #[schema(nullable = false)]
    day: Option<String>,
    #[schema(nullable = false)]
    provider: Option<String>,
    #[schema(nullable = false)]
    model: Option<String>,
    requests: i64,
    errors: i64,
    input_tokens: i64,
    output_tokens: i64,
    cost_micro_usd: i64,
}

#[derive(ToSchema)]
pub struct Budget {
    #[schema(format = Date)]
    month: String,
    budget_micro_usd: Option<u64>,
    soft_micro_usd: Option<u64>,
    /// Leased by replicas (reserved, not all spent).
    committed_micro_usd: i64,
    spent_micro_usd: i64,
    soft_threshold_crossed: bool,
}

#[derive(ToSchema)]
pub struct SuspensionList {
    suspensions: Vec<Suspension>,
}

#[derive(ToSchema)]
pub struct Suspension {
    id: Uuid,
    tenant_id: Uuid,
    /// `api_key:<id>` or `widget:<subject>`
    principal: String,
    #[schema(value_type = Object)]
    reason: Value,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    lifted_at: Option<String>,
    lifted_by: Option<String>,
}

#[derive(ToSchema)]
pub struct Suspended {
    /// The principal as stored (`subject:...` or `api_key:<id>`).
    suspended: String,
}

#[derive(ToSchema)]
pub struct SuspensionLifted {
    lifted: Uuid,
}

#[derive(ToSchema)]
pub struct PolicyReload {
    /// Tenant slugs whose policy changed.
    applied: Vec<String>,
    unchanged: Vec<String>,
    /// Files naming no existing tenant.
    unknown_tenants: Vec<String>,
}

#[derive(ToSchema)]
pub struct WidgetSigningKeys {
    keys: Vec<WidgetSigningKey>,
}

#[derive(ToSchema)]
pub struct WidgetSigningKey {
    kid: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    retired_at: Option<String>,
    /// Tokens signed with a retired key are refused after this.
    #[schema(format = DateTime)]
    verify_until: Option<String>,
}

#[derive(ToSchema)]
pub struct WidgetSigningKeyRotated {
    kid: String,
}

/// Provider key leases and the key source, as operators see them: versions, ages, reasons; never a key.
#[derive(ToSchema)]
pub struct Credentials {
    /// `local` or `vault`
    source: String,
    /// Vault address, logins, KV reads and the last error (Vault key source only).
    #[schema(value_type = Option<Object>)]
    vault: Option<Value>,
    /// How ragvault logs in to Postgres (`static`, or Vault's database secrets engine with its lease).
    #[schema(value_type = Object)]
    database: Value,
    providers: Vec<ProviderLease>,
}

#[derive(ToSchema)]
pub struct ProviderLease {
    provider: String,
    tenant_id: Option<Uuid>,
    /// `active`, `stale`, `expired`, `unavailable` or `pending`
    state: String,
    source: Option<String>,
    key_version: Option<u64>,
    lease_age_secs: Option<u64>,
    refresh_in_secs: Option<u64>,
    expires_in_secs: Option<u64>,
    #[schema(format = DateTime)]
    last_refresh: Option<String>,
    last_error: Option<String>,
    refreshes_ok: u64,
    refreshes_failed: u64,
    refreshes_revoked: u64,
    /// Consecutive calls the provider refused with this key.
    auth_failures: u32,
}

#[derive(ToSchema)]
pub struct CredentialRefreshed {
    provider: String,
    tenant_id: Option<Uuid>,
    key_version: u64,
    source: String,
}

/// `POST /v1/widget-tokens`.
#[derive(ToSchema)]
pub struct WidgetTokenRequest {
    /// Lifetime, at most `widget.max_ttl_secs` (default `widget.default_ttl_secs`).
    ttl_seconds: Option<u64>,
    /// The page origin the token is bound to (checked against the request's `Origin`).
    origin: Option<String>,
    /// An end-user id for rate limits, audit and suspension.
    subject: Option<String>,
    /// Access groups the visitor may read (within the caller's own).
    #[schema(nullable = false)]
    groups: Option<Vec<String>>,
}

/// `POST /v1/documents` as `multipart/form-data`.
#[derive(ToSchema)]
pub struct UploadForm {
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// The document name (default: the file's name).
    name: Option<String>,
    content_type: Option<String>,
    /// Comma separated.
    tags: Option<String>,
    /// JSON text.
    metadata: Option<String>,
}

/// Adds the bearer scheme every `/v1` route uses: `Authorization: Bearer <tenant key | widget token |
/// operator key>`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A tenant API key (`rvk_...`), a widget token (`rvw1...`, `/v1/ask` only) or an \
                         operator key, depending on the route.",
                    ))
                    .build(),
            ),
        );
    }
}

use crate::routes::{admin, ask, chat, credentials, documents, health, metrics, search, tenant};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ragvault",
        description = "Retrieval-augmented generation backend that keeps provider keys and customer content \
                       inside a trust boundary. Errors are `{\"error\": {code, message, request_id}}` with a \
                       stable `code`.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    paths(
        health::healthz,
        health::readyz,
        metrics::metrics,
        tenant::whoami,
        tenant::list_keys,
        tenant::issue_key,
        tenant::revoke_key,
        tenant::mint_widget_token,
        documents::upload,
        documents::list,
        documents::show,
        documents::delete,
        documents::job,
        search::search,
        ask::ask,
        chat::chat_completions,
        admin::create_tenant,
        admin::list_tenants,
        admin::get_tenant,
        admin::update_tenant,
        admin::delete_tenant,
        admin::rotate_keys,
        admin::reencryption,
        admin::list_keys,
        admin::issue_key,
        admin::revoke_key,
        admin::list_audit,
        admin::verify_audit,
        admin::verify_index,
        admin::usage,
        admin::budget,
        admin::reload_policies,
        admin::list_suspensions,
        admin::suspend,
        admin::lift_suspension,
        admin::list_widget_signing_keys,
        admin::rotate_widget_signing_key,
        credentials::list,
        credentials::refresh,
    ),
    tags(
        (name = "health", description = "Liveness, readiness, metrics"),
        (name = "documents", description = "Ingest and manage a tenant's documents"),
        (name = "retrieval", description = "Search, grounded answers, OpenAI-compatible chat"),
        (name = "keys", description = "A tenant's own API keys and widget tokens"),
        (name = "admin", description = "Operator routes"),
    )
)]
pub struct ApiDoc;

/// The document as served at `/openapi.json` and checked in at `docs/openapi.json`.
pub fn document() -> Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null)
}

/// Pretty JSON with a final newline: the checked-in file's exact form. Serialized from utoipa's own types (not
/// through `serde_json::Value`, whose key order depends on a cargo feature another crate may switch on).
pub fn document_text() -> String {
    let mut text = ApiDoc::openapi().to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// `UPDATE_OPENAPI=1 cargo test -p ragvault-server openapi` rewrites the checked-in copy.
    #[test]
    fn the_checked_in_document_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let generated = document_text();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &generated).expect("write docs/openapi.json");
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "docs/openapi.json differs from the API the code describes: run \
             `UPDATE_OPENAPI=1 cargo test -p ragvault-server openapi` and commit the result"
        );
    }

    /// Every API route the router serves is described, and nothing described is missing from the router.
    /// (The router's table is read from its source: axum cannot list its routes.)
    #[test]
    fn every_api_route_is_described_and_every_described_route_exists() {
        let source = include_str!("routes/mod.rs");
        let mut served = BTreeSet::new();
        for line in source.lines() {
            let line = line.trim();
            let Some(start) = line.find("\"/") else {
                continue;
            };
            let path = &line[start + 1..];
            let path = &path[..path.find('"').unwrap_or(path.len())];
            let api =
                path.starts_with("/v1/") || ["/healthz", "/readyz", "/metrics"].contains(&path);
            if api {
                served.insert(path.to_owned());
            }
        }
        let doc = document();
        let described: BTreeSet<String> = doc["paths"]
            .as_object()
            .map(|paths| paths.keys().cloned().collect())
            .unwrap_or_default();
        assert!(served.len() > 25, "{served:?}");
        assert_eq!(served, described);
    }

    #[test]
    fn every_operation_has_an_error_response_and_secured_routes_name_the_scheme() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, operation) in item.as_object().into_iter().flatten() {
                assert!(
                    operation["responses"]["default"].is_object(),
                    "{method} {path} has no error response"
                );
                if path.starts_with("/v1/") {
                    assert_eq!(
                        operation["security"][0]["bearer"],
                        serde_json::json!([]),
                        "{method} {path}"
                    );
                }
            }
        }
    }
}
