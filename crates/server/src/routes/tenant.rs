//! Routes for tenant keys.

use super::keys::{issued_key_body, IssueKeyRequest};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, Caller};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ragvault_core::{ApiKeyId, Principal, Scope};
use ragvault_gateway::{require_tenant_scope, MintRequest};
use serde_json::{json, Value};
use uuid::Uuid;

/// Who the presented key is: lets integrators (and `ragvault ingest --tenant`) check a key and its scopes
/// without side effects.
#[utoipa::path(
    get,
    path = "/v1/whoami",
    tag = "keys",
    summary = "Who the presented credential is",
    responses(
        (status = 200, body = crate::openapi::Whoami),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn whoami(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(match &caller.principal {
        Principal::Tenant {
            tenant_id,
            key_id,
            scopes,
            groups,
        } => {
            let tenant = state.access.get_tenant(*tenant_id).await?;
            json!({
                "kind": "tenant",
                "tenant_id": tenant_id,
                "tenant_slug": tenant.slug,
                "key_id": key_id,
                "scopes": scopes,
                "groups": groups,
            })
        }
        Principal::Widget {
            tenant_id,
            token_id,
            subject,
            groups,
        } => json!({
            "kind": "widget",
            "groups": groups,
            "tenant_id": tenant_id,
            "token_id": token_id,
            "subject": subject,
            "scopes": ["ask"],
        }),
        Principal::Operator { key_id } => json!({"kind": "operator", "key_id": key_id}),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/api-keys",
    tag = "keys",
    summary = "The tenant's API keys (scope `admin`)",
    responses(
        (status = 200, body = crate::openapi::ApiKeyList),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = require_tenant_scope(&caller.principal, Scope::Admin)?;
    let keys = state.store.list_api_keys(tenant_id).await?;
    Ok(Json(json!({ "api_keys": keys })))
}

#[utoipa::path(
    post,
    path = "/v1/api-keys",
    tag = "keys",
    summary = "Issue an API key for the caller's tenant (scope `admin`)",
    request_body = IssueKeyRequest,
    responses(
        (status = 201, body = crate::openapi::IssuedApiKey),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn issue_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<IssueKeyRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let tenant_id = require_tenant_scope(&caller.principal, Scope::Admin)?;
    let request = request.validate()?;
    let issued = state
        .access
        .issue_api_key(
            tenant_id,
            request.scopes,
            request.name,
            request.expires_at,
            within_caller_groups(&caller, request.groups)?,
            &caller.context(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(issued_key_body(&issued))))
}

#[utoipa::path(
    delete,
    path = "/v1/api-keys/{key_id}",
    tag = "keys",
    summary = "Revoke one of the tenant's keys (scope `admin`)",
    params(("key_id" = Uuid, Path, description = "API key id")),
    responses(
        (status = 200, body = crate::openapi::ApiKey),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key_id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = require_tenant_scope(&caller.principal, Scope::Admin)?;
    let key = state
        .access
        .revoke_api_key(tenant_id, ApiKeyId(key_id), &caller.context())
        .await?;
    Ok(Json(json!(key)))
}

/// Routes whose capability is not built yet still enforce authentication and scope, then say plainly
/// that the capability is missing rather than pretending to work.
/// A credential minted by a caller with access groups may only narrow them: the groups it asks for must be
/// a subset of the caller's (and absent means the caller's own).
fn within_caller_groups(
    caller: &Caller,
    asked: Option<Vec<String>>,
) -> Result<Option<Vec<String>>, ApiError> {
    let Some(held) = caller.principal.access_groups() else {
        return Ok(asked);
    };
    match asked {
        None => Ok(Some(held.to_vec())),
        Some(asked) if asked.iter().all(|g| held.contains(&g.to_lowercase())) => Ok(Some(asked)),
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "groups_not_held",
            "a key with access groups can only grant groups it holds",
        )),
    }
}

/// Mints a widget token for the caller's tenant (scope `tokens`). The token is shown once; nothing about it
/// is stored, so minting one per page view costs no database write.
#[utoipa::path(
    post,
    path = "/v1/widget-tokens",
    tag = "keys",
    summary = "Mint a short-lived widget token (scope `tokens`); it carries scope `ask` only",
    request_body = crate::openapi::WidgetTokenRequest,
    responses(
        (status = 200, body = crate::openapi::WidgetToken),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn mint_widget_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<MintRequest>,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = require_tenant_scope(&caller.principal, Scope::Tokens)?;
    let mut request = request;
    if caller.principal.access_groups().is_some() {
        let asked = (!request.groups.is_empty()).then(|| request.groups.clone());
        request.groups = within_caller_groups(&caller, asked)?.unwrap_or_default();
    }
    let minted = state
        .access
        .widget_tokens()
        .mint(tenant_id, &request, time::OffsetDateTime::now_utc())
        .await?;
    let expires_at = minted
        .expires_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    Ok(Json(json!({
        "token": minted.token.expose_secret(),
        "token_id": minted.token_id,
        "expires_at": expires_at,
    })))
}
