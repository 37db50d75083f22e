//! Suspended principals (API keys, widget subjects, single widget tokens): set by anomaly response or by an
//! operator, lifted by an operator. Every request of a tenant's principals is checked against the tenant's
//! active suspensions, which each replica caches for a few seconds (one query per tenant per interval, not per
//! request, made ahead of expiry by one request while the others use the cached set): a suspension made on
//! another replica takes effect here within `CACHE_TTL`, one made here at once.

use crate::error::ApiError;
use crate::refresh::TenantCache;
use axum::http::StatusCode;
use ragvault_core::TenantId;
use ragvault_store::{AuditEntry, Store, StoreError};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const CACHE_TTL: Duration = Duration::from_secs(5);

pub struct Suspensions {
    store: Store,
    cache: TenantCache<Arc<HashSet<String>>>,
}

impl Suspensions {
    pub fn new(store: Store) -> Suspensions {
        Suspensions {
            store,
            cache: TenantCache::default(),
        }
    }

    /// Whether `scope` (`api_key:<id>`, `subject:<subject>`, `widget:<token id>`) is suspended in `tenant`.
    pub async fn is_suspended(
        self: &Arc<Self>,
        tenant: TenantId,
        scope: &str,
    ) -> Result<bool, StoreError> {
        let active = self
            .cache
            .serve(
                tenant,
                CACHE_TTL,
                || {
                    let suspensions = self.clone();
                    async move { suspensions.load(tenant).await }
                },
                move |e: &StoreError| {
                    tracing::warn!(tenant = %tenant, error = %e, "could not reload suspensions; using the cached ones");
                },
            )
            .await?;
        Ok(active.contains(scope))
    }

    async fn load(&self, tenant: TenantId) -> Result<Arc<HashSet<String>>, StoreError> {
        let ticket = self.cache.ticket();
        let set: Arc<HashSet<String>> = Arc::new(
            self.store
                .active_suspensions(tenant)
                .await?
                .into_iter()
                .collect(),
        );
        self.cache.put(ticket, tenant, set.clone());
        Ok(set)
    }

    /// Suspends `principal` (with its audit row); false when it already was.
    pub async fn suspend(
        &self,
        tenant: TenantId,
        principal: &str,
        reason: &serde_json::Value,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let suspended = self
            .store
            .suspend_principal(tenant, principal, reason, audit)
            .await;
        self.forget(tenant);
        suspended
    }

    /// Lifts a suspension (with its audit row); false when there was no active one with that id.
    pub async fn lift(
        &self,
        tenant: TenantId,
        id: Uuid,
        lifted_by: &str,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let lifted = self
            .store
            .lift_suspension(tenant, id, lifted_by, audit)
            .await;
        self.forget(tenant);
        lifted
    }

    fn forget(&self, tenant: TenantId) {
        self.cache.forget(tenant);
    }
}

/// An operator suspends `principal` (see [`operator_principal`]) of `tenant`, with an optional note; returns
/// the principal as stored. `409 already_suspended` when it is.
pub async fn suspend_by_operator(
    state: &crate::state::AppState,
    tenant: TenantId,
    principal: &str,
    note: Option<&str>,
    ctx: &ragvault_gateway::RequestContext,
) -> Result<String, ApiError> {
    let principal = operator_principal(principal.trim())?;
    state.access.get_tenant(tenant).await?;
    if let Some(key) = principal.strip_prefix("api_key:") {
        let keys = state.store.list_api_keys(tenant).await?;
        if !keys.iter().any(|k| k.id.0.to_string() == key) {
            return Err(ApiError::not_found("API key"));
        }
    }
    let note: String = note.unwrap_or_default().chars().take(200).collect();
    let reason = serde_json::json!({ "by": "operator", "note": note });
    let audit = ctx
        .audit_entry("principal.suspended")
        .tenant(tenant)
        .target(principal.clone())
        .details(reason.clone());
    if !state
        .suspensions
        .suspend(tenant, &principal, &reason, &audit)
        .await?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_suspended",
            "this principal is already suspended",
        ));
    }
    Ok(principal)
}

/// What an operator may suspend: `subject:<widget subject>` (every token minted for that end user) or
/// `api_key:<key id>`.
pub fn operator_principal(principal: &str) -> Result<String, ApiError> {
    let invalid = || {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_principal",
            "principal must be `subject:<widget subject>` or `api_key:<key id>`",
        )
    };
    if let Some(subject) = principal.strip_prefix("subject:") {
        ragvault_gateway::check_subject(subject)?;
        return Ok(principal.to_owned());
    }
    if let Some(id) = principal.strip_prefix("api_key:") {
        let id: Uuid = id.parse().map_err(|_| invalid())?;
        return Ok(format!("api_key:{id}"));
    }
    Err(invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_name_subjects_or_key_ids() {
        assert_eq!(
            operator_principal("subject:visitor-42").unwrap(),
            "subject:visitor-42"
        );
        let id = Uuid::new_v4();
        assert_eq!(
            operator_principal(&format!("api_key:{}", id.to_string().to_uppercase())).unwrap(),
            format!("api_key:{id}")
        );
        for bad in [
            "visitor",
            "subject:",
            "subject:a\nb",
            "api_key:nope",
            "widget:x",
            "tenant",
        ] {
            assert!(operator_principal(bad).is_err(), "{bad}");
        }
    }
}
