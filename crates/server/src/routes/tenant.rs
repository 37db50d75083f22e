//! Routes for tenant keys.

use super::keys::{issued_key_body, IssueKeyRequest};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, Caller};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ragvault_core::{ApiKeyId, Principal, Scope};
use ragvault_gateway::require_tenant_scope;
use serde_json::{json, Value};
use uuid::Uuid;

/// Who the presented key is: lets integrators (and `ragvault ingest --tenant`) check a key and its scopes
/// without side effects.
pub async fn whoami(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(match &caller.principal {
        Principal::Tenant {
            tenant_id,
            key_id,
            scopes,
        } => {
            let tenant = state.access.get_tenant(*tenant_id).await?;
            json!({
                "kind": "tenant",
                "tenant_id": tenant_id,
                "tenant_slug": tenant.slug,
                "key_id": key_id,
                "scopes": scopes,
            })
        }
        Principal::Operator { key_id } => json!({"kind": "operator", "key_id": key_id}),
    }))
}

pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = require_tenant_scope(&caller.principal, Scope::Admin)?;
    let keys = state.store.list_api_keys(tenant_id).await?;
    Ok(Json(json!({ "api_keys": keys })))
}

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
            &caller.context(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(issued_key_body(&issued))))
}

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
fn not_built(capability: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "not_implemented",
        format!("{capability} is not available in this build yet"),
    )
}

pub async fn mint_widget_token(caller: Caller) -> Result<Json<Value>, ApiError> {
    require_tenant_scope(&caller.principal, Scope::Tokens)?;
    Err(not_built("widget tokens"))
}
