//! `/v1/admin/credentials`: provider key leases as operators see them (versions and reasons, never keys).

use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery, Caller};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ragvault_core::TenantId;
use ragvault_credentials::{CredentialsError, ProviderKeyRef};
use ragvault_gateway::require_operator;
use ragvault_store::AuditEntry;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

#[utoipa::path(
    get,
    path = "/v1/admin/credentials",
    tag = "admin",
    summary = "Provider key leases and the key source (never a key)",
    responses(
        (status = 200, body = crate::openapi::Credentials),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    require_operator(&caller.principal)?;
    let source = &state.key_source;
    let vault = source.vault_backend().map(|v| {
        json!({
            "addr": v.config().addr,
            "logins": v.logins(),
            "kv_reads": v.kv_reads(),
            "last_error": v.last_error(),
        })
    });
    let database = match &state.db_login {
        Some(login) => json!(login.status()),
        None => json!({ "source": "static" }),
    };
    Ok(Json(json!({
        "source": source.name(),
        "vault": vault,
        "database": database,
        "providers": state.leases.status(),
    })))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RefreshQuery {
    /// A tenant's own key instead of the shared one.
    #[serde(default)]
    tenant: Option<Uuid>,
    /// The sandbox key instead of the production one.
    #[serde(default)]
    sandbox: bool,
}

/// Re-reads a provider key now (after writing a new version, or to confirm a revocation).
#[utoipa::path(
    post,
    path = "/v1/admin/credentials/{provider}/refresh",
    tag = "admin",
    summary = "Re-read a provider key now",
    params(("provider" = String, Path, description = "Provider name"), RefreshQuery),
    responses(
        (status = 200, body = crate::openapi::CredentialRefreshed),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn refresh(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(provider): ApiPath<String>,
    ApiQuery(query): ApiQuery<RefreshQuery>,
) -> Result<Json<Value>, ApiError> {
    require_operator(&caller.principal)?;
    let key_ref = ProviderKeyRef {
        provider: provider.clone(),
        tenant: query.tenant.map(TenantId),
        sandbox: query.sandbox,
    };
    let result = state.leases.force_refresh(&key_ref).await;
    let mut audit = AuditEntry::new(caller.principal.actor(), "credential.refresh_requested")
        .target(format!("provider:{provider}"))
        .request_id(Some(caller.request_id.clone()))
        .details(json!({ "ok": result.is_ok() }));
    if let Some(tenant) = key_ref.tenant {
        audit = audit.tenant(tenant);
    }
    state.store.append_audit(&audit).await?;
    match result {
        Ok(lease) => Ok(Json(json!({
            "provider": provider,
            "tenant_id": key_ref.tenant,
            "key_version": lease.version,
            "source": lease.source,
        }))),
        Err(e) => Err(credential_error(e)),
    }
}

/// Errors from the key source, as operators should see them: what is wrong and where, never a value.
pub fn credential_error(err: CredentialsError) -> ApiError {
    match err {
        CredentialsError::VaultConfig(ref reason)
            if reason.starts_with("invalid provider name") =>
        {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_provider", reason.clone())
        }
        CredentialsError::SecretRevoked { .. } | CredentialsError::MalformedSecret { .. } => {
            ApiError::new(
                StatusCode::CONFLICT,
                "provider_key_unusable",
                err.to_string(),
            )
        }
        CredentialsError::VaultUnavailable { .. } | CredentialsError::LoginRefused { .. } => {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "key_source_unavailable",
                err.to_string(),
            )
        }
        CredentialsError::ProviderUnavailable { .. } | CredentialsError::KeyRejected { .. } => {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "provider_unavailable",
                err.to_string(),
            )
        }
        CredentialsError::VaultDenied { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "key_source_denied",
            err.to_string(),
        ),
        CredentialsError::KekMissing { .. } => {
            ApiError::new(StatusCode::CONFLICT, "tenant_keys_missing", err.to_string())
        }
        CredentialsError::DataKeyUnwrap { .. }
        | CredentialsError::SealTampered
        | CredentialsError::UnsupportedSealFormat(_)
        | CredentialsError::Transit(_)
        | CredentialsError::KeyFileIo { .. }
        | CredentialsError::InsecurePermissions { .. }
        | CredentialsError::MalformedKeyFile { .. }
        | CredentialsError::KeyringTampered { .. }
        | CredentialsError::Random
        | CredentialsError::VaultConfig(_)
        | CredentialsError::SecretIdFile { .. } => ApiError::internal(&err),
    }
}
