//! Policy `retention_days`: documents older than that are deleted (chunks, vectors, sealed text and index
//! points), each deletion audited as `document.expired`. Runs at start and every `retention.sweep_interval_secs`.

use crate::policy::TenantPolicy;
use crate::state::AppState;
use ragvault_store::AuditEntry;
use std::time::Duration;

/// Documents deleted per query, so one tenant with a large backlog does not hold a long transaction.
const BATCH: i64 = 100;

/// Deletes every expired document of every tenant; returns how many went.
pub async fn sweep(state: &AppState) -> Result<usize, crate::error::ApiError> {
    let mut deleted = 0;
    for tenant in state.store.list_tenants().await? {
        let Ok(policy) = TenantPolicy::from_stored(&tenant.policy) else {
            continue; // logged by from_stored; its documents stay until an operator fixes the policy
        };
        let Some(days) = policy.retention_days else {
            continue;
        };
        let cutoff = time::OffsetDateTime::now_utc() - time::Duration::days(i64::from(days));
        loop {
            let expired = state
                .store
                .documents_created_before(tenant.id, cutoff, BATCH)
                .await?;
            if expired.is_empty() {
                break;
            }
            for id in expired {
                let audit = AuditEntry::new("system:retention", "document.expired")
                    .tenant(tenant.id)
                    .target(format!("document:{}", id.0))
                    .details(serde_json::json!({ "retention_days": days }));
                crate::routes::delete_document(state, tenant.id, id, &audit).await?;
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}

pub async fn sweep_periodically(state: AppState, every: Duration) {
    loop {
        match sweep(&state).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "retention: expired documents deleted"),
            Err(e) => {
                tracing::warn!(error = %e.body.message, "retention sweep failed; retrying later")
            }
        }
        tokio::time::sleep(every).await;
    }
}
