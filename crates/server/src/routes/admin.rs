//! `/v1/admin/*`: operator-only tenant and key management.

use super::keys::{issued_key_body, IssueKeyRequest};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Caller};
use crate::policy::TenantPolicy;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ragvault_core::{ApiKeyId, Environment, TenantId, TenantSlug, TenantStatus};
use ragvault_gateway::require_operator;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

const MAX_AUDIT_PAGE: i64 = 1000;

fn operator(caller: &Caller) -> Result<(), ApiError> {
    require_operator(&caller.principal)?;
    Ok(())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    slug: String,
    /// `production` (default) or `sandbox`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    environment: Environment,
}

#[utoipa::path(
    post,
    path = "/v1/admin/tenants",
    tag = "admin",
    summary = "Create a tenant and its first API key",
    request_body = CreateTenantRequest,
    responses(
        (status = 201, body = crate::openapi::CreatedTenant),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn create_tenant(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateTenantRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    operator(&caller)?;
    let slug = TenantSlug::parse(&request.slug).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_slug",
            e.to_string(),
        )
    })?;
    let created = state
        .access
        .create_tenant(slug, request.environment, &caller.context())
        .await?;
    let mut body = json!(created.tenant);
    if let Some(map) = body.as_object_mut() {
        map.insert(
            "api_key".to_owned(),
            Value::String(created.api_key.expose_secret().clone()),
        );
        map.insert("api_key_id".to_owned(), json!(created.key.id));
        map.insert("scopes".to_owned(), json!(created.key.scopes));
    }
    Ok((StatusCode::CREATED, Json(body)))
}

#[utoipa::path(
    get,
    path = "/v1/admin/tenants",
    tag = "admin",
    summary = "Every tenant",
    responses(
        (status = 200, body = crate::openapi::TenantList),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn list_tenants(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    operator(&caller)?;
    let tenants = state.access.list_tenants().await?;
    Ok(Json(json!({ "tenants": tenants })))
}

#[utoipa::path(
    get,
    path = "/v1/admin/tenants/{tenant_id}",
    tag = "admin",
    summary = "One tenant",
    params(("tenant_id" = Uuid, Path, description = "Tenant id")),
    responses(
        (status = 200, body = crate::openapi::Tenant),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn get_tenant(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(tenant_id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    operator(&caller)?;
    let tenant = state.access.get_tenant(TenantId(tenant_id)).await?;
    Ok(Json(json!(tenant)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenantRequest {
    /// `active` or `suspended`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    status: Option<TenantStatus>,
    /// The whole policy (replaces the stored one); keys as in the README's policy table.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    policy: Option<TenantPolicy>,
}

/// Suspends or resumes a tenant (its keys are refused on the next request) and/or replaces its policy.
#[utoipa::path(
    patch,
    path = "/v1/admin/tenants/{tenant_id}",
    tag = "admin",
    summary = "Suspend or resume a tenant and/or replace its policy",
    request_body = UpdateTenantRequest,
    params(("tenant_id" = Uuid, Path, description = "Tenant id")),
    responses(
        (status = 200, body = crate::openapi::Tenant),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn update_tenant(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(tenant_id): ApiPath<Uuid>,
    ApiJson(request): ApiJson<UpdateTenantRequest>,
) -> Result<Json<Value>, ApiError> {
    operator(&caller)?;
    let tenant_id = TenantId(tenant_id);
    if request.status.is_none() && request.policy.is_none() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "give `status` and/or `policy`",
        ));
    }
    let mut tenant = state.access.get_tenant(tenant_id).await?;
    if let Some(policy) = request.policy {
        policy.validate(&state.settings)?;
        state.generator.forget(tenant_id);
        tenant = state
            .access
            .set_tenant_policy(tenant_id, json!(policy), &caller.context())
            .await?;
    }
    if let Some(status) = request.status {
        tenant = state
            .access
            .set_tenant_status(tenant_id, status, &caller.context())
            .await?;
    }
    Ok(Json(json!(tenant)))
}

#[utoipa::path(
    get,
    path = "/v1/admin/tenants/{tenant_id}/api-keys",
    tag = "admin",
    summary = "A tenant's API keys",
    params(("tenant_id" = Uuid, Path, description = "Tenant id")),
    responses(
        (status = 200, body = crate::openapi::ApiKeyList),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(tenant_id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    operator(&caller)?;
    let tenant_id = TenantId(tenant_id);
    state.store.get_tenant(tenant_id).await?;
    let keys = state.store.list_api_keys(tenant_id).await?;
    Ok(Json(json!({ "api_keys": keys })))
}

#[utoipa::path(
    post,
    path = "/v1/admin/tenants/{tenant_id}/api-keys",
    tag = "admin",
    summary = "Issue an API key for a tenant",
    request_body = crate::routes::keys::IssueKeyRequest,
    params(("tenant_id" = Uuid, Path, description = "Tenant id")),
    responses(
        (status = 201, body = crate::openapi::IssuedApiKey),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn issue_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(tenant_id): ApiPath<Uuid>,
    ApiJson(request): ApiJson<IssueKeyRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    operator(&caller)?;
    let request = request.validate()?;
    let issued = state
        .access
        .issue_api_key(
            TenantId(tenant_id),
            request.scopes,
            request.name,
            request.expires_at,
            request.groups,
            &caller.context(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(issued_key_body(&issued))))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/tenants/{tenant_id}/api-keys/{key_id}",
    tag = "admin",
    summary = "Revoke a tenant's API key",
    params(("tenant_id" = Uuid, Path, description = "Tenant id"), ("key_id" = Uuid, Path, description = "API key id")),
    responses(
        (status = 200, body = crate::openapi::ApiKey),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((tenant_id, key_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<Json<Value>, ApiError> {
    operator(&caller)?;
    let key = state
        .access
        .revoke_api_key(TenantId(tenant_id), ApiKeyId(key_id), &caller.context())
        .await?;
    Ok(Json(json!(key)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this tenant's events.
    #[serde(default)]
    tenant: Option<Uuid>,
    #[serde(default)]
    /// Events after this id (`next_after` of the previous page).
    after: Option<i64>,
    /// 1 to 1000, default 100.
    #[serde(default)]
    limit: Option<i64>,
}

/// Walks the audit hash chain: `{intact, checked, head_seq, first_bad_seq, problem}`.
#[utoipa::path(
    get,
    path = "/v1/admin/audit/verify",
    tag = "admin",
    summary = "Walk the audit hash chain",
    responses(
        (status = 200, body = crate::openapi::AuditVerification),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn verify_audit(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    operator(&caller)?;
    state.settle_metering().await;
    let verification = state.store.verify_audit_chain().await?;
    Ok(Json(json!({
        "intact": verification.is_intact(),
        "checked": verification.checked,
        "head_seq": verification.head_seq,
        "first_bad_seq": verification.first_bad_seq,
        "problem": verification.problem,
    })))
}

/// Compares every tenant's index partition with its chunks in Postgres: `{consistent, tenants: [{tenant_id,
/// in_postgres, in_index, missing, stale}]}`. The startup reconciliation repairs what this finds; an ingest in
/// flight shows as missing points until its upsert lands.
#[utoipa::path(
    get,
    path = "/v1/admin/index/verify",
    tag = "admin",
    summary = "Compare the vector index with Postgres",
    responses(
        (status = 200, body = crate::openapi::IndexVerification),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn verify_index(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    operator(&caller)?;
    let mut consistent = true;
    let mut tenants = Vec::new();
    for tenant in state.store.list_tenants().await? {
        let difference = state
            .indexer
            .difference(tenant.id)
            .await
            .map_err(content_error)?;
        consistent &= difference.is_consistent();
        tenants.push(json!({
            "tenant_id": tenant.id,
            "in_postgres": difference.in_postgres,
            "in_index": difference.in_index,
            "missing": difference.missing.len(),
            "stale": difference.stale.len(),
        }));
    }
    Ok(Json(
        json!({ "consistent": consistent, "tenants": tenants }),
    ))
}

/// Key ids that still verify widget tokens, newest first (never key material).
#[utoipa::path(
    get,
    path = "/v1/admin/widget-signing-keys",
    tag = "admin",
    summary = "Widget signing key ids that still verify tokens",
    responses(
        (status = 200, body = crate::openapi::WidgetSigningKeys),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn list_widget_signing_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    operator(&caller)?;
    let keys = state.access.widget_tokens().list_keys().await?;
    Ok(Json(json!({ "keys": keys })))
}

/// Starts a new widget signing key; tokens signed with the old one verify until they expire.
#[utoipa::path(
    post,
    path = "/v1/admin/widget-signing-keys/rotate",
    tag = "admin",
    summary = "Start a new widget signing key",
    responses(
        (status = 200, body = crate::openapi::WidgetSigningKeyRotated),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn rotate_widget_signing_key(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    operator(&caller)?;
    let kid = state
        .access
        .widget_tokens()
        .rotate(&caller.context())
        .await?;
    Ok(Json(json!({ "kid": kid })))
}

#[utoipa::path(
    get,
    path = "/v1/admin/audit",
    tag = "admin",
    summary = "Audit events, oldest first, paged by `after`",
    params(AuditQuery),
    responses(
        (status = 200, body = crate::openapi::AuditPage),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    operator(&caller)?;
    state.settle_metering().await;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_AUDIT_PAGE).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("limit must be between 1 and {MAX_AUDIT_PAGE}"),
        ));
    }
    let events = state
        .store
        .list_audit(query.tenant.map(TenantId), query.after.unwrap_or(0), limit)
        .await?;
    let next_after = events.last().map(|e| e.id);
    Ok(Json(json!({ "events": events, "next_after": next_after })))
}

/// Deletes the tenant and crypto-shreds its content (its KEK is destroyed).
#[utoipa::path(
    delete,
    path = "/v1/admin/tenants/{tenant_id}",
    tag = "admin",
    summary = "Delete a tenant and crypto-shred its content (its KEK is destroyed)",
    params(("tenant_id" = Uuid, Path, description = "Tenant id")),
    responses(
        (status = 200, body = crate::openapi::TenantDeleted),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn delete_tenant(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(tenant_id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    operator(&caller)?;
    let tenant_id = TenantId(tenant_id);
    // The partition name comes from the tenant's index key, which dies with the KEK: derive it first.
    let partition = state.indexer.partition(tenant_id).await.ok();
    state
        .access
        .delete_tenant(tenant_id, &caller.context())
        .await?;
    // Crypto-shredding reaches memory too: no plaintext data key of the tenant stays cached.
    state.content.forget_tenant_keys(tenant_id);
    if let Some(partition) = partition {
        if let Err(e) = state.indexer.index().drop_partition(&partition.name).await {
            // Left over, it is removed at the next start (no tenant owns it any more).
            tracing::error!(%tenant_id, error = %e, "could not drop the deleted tenant's index partition");
        }
    }
    Ok(Json(
        json!({ "id": tenant_id, "deleted": true, "kek_destroyed": true }),
    ))
}

/// Rotates the tenant's KEK and rewraps its data keys; new writes use a new content key.
#[utoipa::path(
    post,
    path = "/v1/admin/tenants/{tenant_id}/rotate-keys",
    tag = "admin",
    summary = "Rotate the tenant's KEK and start re-encrypting its content",
    params(("tenant_id" = Uuid, Path, description = "Tenant id")),
    responses(
        (status = 200, body = crate::openapi::KeyRotation),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn rotate_keys(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(tenant_id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    operator(&caller)?;
    let tenant_id = TenantId(tenant_id);
    let rotation = state
        .access
        .rotate_tenant_keys(tenant_id, &caller.context())
        .await?;
    state.content.forget_tenant_keys(tenant_id);
    // Old chunks move to the new content key in the background; progress at .../reencryption.
    let content = state.content.clone();
    tokio::spawn(async move { crate::run_reencryption(&content, tenant_id).await });
    Ok(Json(json!(rotation)))
}

/// How many of the tenant's chunks are sealed under its current content key.
#[utoipa::path(
    get,
    path = "/v1/admin/tenants/{tenant_id}/reencryption",
    tag = "admin",
    summary = "Re-encryption progress after a rotation",
    params(("tenant_id" = Uuid, Path, description = "Tenant id")),
    responses(
        (status = 200, body = crate::openapi::Reencryption),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn reencryption(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(tenant_id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    operator(&caller)?;
    let tenant_id = TenantId(tenant_id);
    state.access.get_tenant(tenant_id).await?;
    let progress = state
        .content
        .reencryption_progress(tenant_id)
        .await
        .map_err(content_error)?;
    Ok(Json(json!({
        "done": progress.done,
        "total": progress.total,
        "complete": progress.done == progress.total,
    })))
}

pub(crate) fn content_error(err: ragvault_ingest::sealed::ContentError) -> ApiError {
    use ragvault_ingest::sealed::ContentError;
    match err {
        ContentError::Store(e) => e.into(),
        ContentError::Credentials(e) => crate::routes::credential_error(e),
        ContentError::TooManyChunks(_) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_chunks",
            err.to_string(),
        ),
        ContentError::Index(ragvault_search::SearchError::ModelMismatch { .. }) => ApiError::new(
            StatusCode::CONFLICT,
            "index_model_mismatch",
            err.to_string(),
        ),
        ContentError::Index(e) => {
            tracing::error!(error = %e, "vector index failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "index_unavailable",
                "the vector index is unavailable",
            )
        }
        ContentError::BudgetExceeded { retry_after_secs } => {
            ragvault_gateway::GatewayError::BudgetExceeded { retry_after_secs }.into()
        }
        ContentError::Metering(reason) => {
            ragvault_gateway::GatewayError::MeteringUnavailable(reason).into()
        }
        ContentError::Embedding(e) => {
            tracing::error!(error = %e, "embedding model failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "embedding_unavailable",
                "the embedding model failed",
            )
        }
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// A tenant id or slug; all tenants when absent.
    #[serde(default)]
    tenant: Option<String>,
    /// First and last UTC day (`YYYY-MM-DD`), inclusive; default: this month so far.
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    /// `day` (default), `model`, `provider` or `day_model`.
    #[serde(default)]
    #[param(value_type = Option<String>)]
    group_by: Option<ragvault_store::UsageGrouping>,
}

fn parse_day(name: &str, value: &str) -> Result<time::Date, ApiError> {
    time::Date::parse(
        value,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("{name}: expected a date as YYYY-MM-DD"),
        )
    })
}

/// Spend rows in micro-USD from the daily rollups, grouped by day, model or provider.
#[utoipa::path(
    get,
    path = "/v1/admin/usage",
    tag = "admin",
    summary = "Spend in micro-USD from the daily rollups",
    params(UsageQuery),
    responses(
        (status = 200, body = crate::openapi::UsageReport),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<Json<Value>, ApiError> {
    operator(&caller)?;
    state.settle_metering().await;
    let today = time::OffsetDateTime::now_utc().date();
    let from = match &query.from {
        Some(v) => parse_day("from", v)?,
        None => ragvault_store::month_of(time::OffsetDateTime::now_utc()),
    };
    let to = match &query.to {
        Some(v) => parse_day("to", v)?,
        None => today,
    };
    if from > to || (to - from).whole_days() > 366 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "from must not be after to, and the range at most 366 days",
        ));
    }
    let tenant = match &query.tenant {
        None => None,
        Some(t) => Some(match t.parse::<Uuid>() {
            Ok(id) => TenantId(id),
            Err(_) => state.access.get_tenant_by_slug(t).await?.id,
        }),
    };
    let group_by = query.group_by.unwrap_or(ragvault_store::UsageGrouping::Day);
    let rows = state.store.usage_report(tenant, from, to, group_by).await?;
    let total: i64 = rows.iter().map(|r| r.cost_micro_usd).sum();
    Ok(Json(json!({
        "from": from.to_string(),
        "to": to.to_string(),
        "group_by": group_by,
        "rows": rows,
        "total_cost_micro_usd": total,
    })))
}

/// A tenant's budget this month: the limit in force, what replicas have leased, and what was spent.
#[utoipa::path(
    get,
    path = "/v1/admin/tenants/{tenant_id}/budget",
    tag = "admin",
    summary = "A tenant's budget this month",
    params(("tenant_id" = Uuid, Path, description = "Tenant id")),
    responses(
        (status = 200, body = crate::openapi::Budget),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn budget(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(tenant_id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    operator(&caller)?;
    state.settle_metering().await;
    let tenant_id = TenantId(tenant_id);
    state.access.get_tenant(tenant_id).await?;
    let generation = state.generator.for_tenant(tenant_id).await?;
    let month = ragvault_store::month_of(time::OffsetDateTime::now_utc());
    let ledger = state.store.budget_month(tenant_id, month).await?;
    Ok(Json(json!({
        "month": month.to_string(),
        "budget_micro_usd": generation.budget.map(|b| b.hard_micro_usd),
        "soft_micro_usd": generation.budget.and_then(|b| b.soft_micro_usd),
        "committed_micro_usd": ledger.committed_micro_usd,
        "spent_micro_usd": ledger.spent_micro_usd,
        "soft_threshold_crossed": ledger.soft_alerted,
    })))
}

/// Principals suspended by anomaly response (active and lifted), newest first.
#[utoipa::path(
    get,
    path = "/v1/admin/tenants/{tenant_id}/suspensions",
    tag = "admin",
    summary = "Keys and widget subjects suspended by anomaly response",
    params(("tenant_id" = Uuid, Path, description = "Tenant id")),
    responses(
        (status = 200, body = crate::openapi::SuspensionList),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn list_suspensions(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(tenant_id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    operator(&caller)?;
    let suspensions = state.store.list_suspensions(TenantId(tenant_id)).await?;
    Ok(Json(json!({ "suspensions": suspensions })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspendRequest {
    /// `subject:<widget subject>` (every token minted for that end user) or `api_key:<key id>`.
    principal: String,
    /// Why, for the audit log (at most 200 characters kept).
    #[serde(default)]
    note: Option<String>,
}

/// Suspends a widget subject or an API key of the tenant: its requests are refused (`403 principal_suspended`)
/// until an operator lifts it.
#[utoipa::path(
    post,
    path = "/v1/admin/tenants/{tenant_id}/suspensions",
    tag = "admin",
    summary = "Suspend a widget subject or an API key",
    request_body = SuspendRequest,
    params(("tenant_id" = Uuid, Path, description = "Tenant id")),
    responses(
        (status = 201, body = crate::openapi::Suspended),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn suspend(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(tenant_id): ApiPath<Uuid>,
    ApiJson(request): ApiJson<SuspendRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    operator(&caller)?;
    let principal = crate::suspensions::suspend_by_operator(
        &state,
        TenantId(tenant_id),
        &request.principal,
        request.note.as_deref(),
        &caller.context(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(json!({ "suspended": principal }))))
}

/// Lifts a suspension: the key or widget subject works again on its next request.
#[utoipa::path(
    post,
    path = "/v1/admin/tenants/{tenant_id}/suspensions/{suspension_id}/lift",
    tag = "admin",
    summary = "Lift a suspension",
    params(("tenant_id" = Uuid, Path, description = "Tenant id"), ("suspension_id" = Uuid, Path, description = "Suspension id")),
    responses(
        (status = 200, body = crate::openapi::SuspensionLifted),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn lift_suspension(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((tenant_id, suspension_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<Json<Value>, ApiError> {
    operator(&caller)?;
    let tenant_id = TenantId(tenant_id);
    let audit = caller
        .context()
        .audit_entry("suspension.lifted")
        .tenant(tenant_id)
        .target(format!("suspension:{suspension_id}"));
    if !state
        .suspensions
        .lift(tenant_id, suspension_id, &caller.principal.actor(), &audit)
        .await?
    {
        return Err(ApiError::not_found("active suspension"));
    }
    Ok(Json(json!({ "lifted": suspension_id })))
}

/// Re-reads `policies.dir` (as SIGHUP does): `{applied, unchanged, unknown_tenants}`, or 422
/// `invalid_policy_file` naming every bad file, key and reason (and nothing applied).
#[utoipa::path(
    post,
    path = "/v1/admin/policies/reload",
    tag = "admin",
    summary = "Re-read `policies.dir` (as SIGHUP does)",
    responses(
        (status = 200, body = crate::openapi::PolicyReload),
        (status = 422, description = "`invalid_policy_file` with every problem; nothing applied", body = crate::openapi::ErrorEnvelope),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn reload_policies(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    operator(&caller)?;
    match crate::policy_files::reload(&state, &caller.context()).await {
        Ok(report) => Ok(Json(json!(report))),
        Err(crate::policy_files::ReloadError::Invalid(problems)) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_policy_file",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
        .with_extra(json!({ "problems": problems }))),
        Err(crate::policy_files::ReloadError::Apply(e)) => Err(e),
    }
}
