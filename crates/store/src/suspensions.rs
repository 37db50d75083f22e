//! Principals suspended by anomaly response.

use crate::audit::{self, AuditEntry};
use crate::{Store, StoreError};
use ragvault_core::TenantId;
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Clone, Debug, serde::Serialize)]
pub struct SuspensionRecord {
    pub id: Uuid,
    pub tenant_id: TenantId,
    /// `api_key:<id>` or `subject:<subject>`.
    pub principal: String,
    pub reason: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub lifted_at: Option<OffsetDateTime>,
    pub lifted_by: Option<String>,
}

impl Store {
    /// Suspends a principal, with its audit row; false when it already was.
    pub async fn suspend_principal(
        &self,
        tenant: TenantId,
        principal: &str,
        reason: &serde_json::Value,
        audit_entry: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO suspensions (id, tenant_id, principal, reason)
             SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = $2)
             ON CONFLICT (tenant_id, principal) WHERE lifted_at IS NULL DO NOTHING",
        )
        .bind(Uuid::new_v4())
        .bind(tenant.0)
        .bind(principal)
        .bind(reason)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            audit::insert(&mut tx, audit_entry).await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// Whether any of `principals` is suspended now.
    pub async fn is_suspended(
        &self,
        tenant: TenantId,
        principals: &[String],
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM suspensions
                            WHERE tenant_id = $1 AND principal = ANY($2) AND lifted_at IS NULL)",
        )
        .bind(tenant.0)
        .bind(principals)
        .fetch_one(&self.pool)
        .await?)
    }

    /// The principals suspended now (usually none): what a replica caches to check requests against.
    pub async fn active_suspensions(&self, tenant: TenantId) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT principal FROM suspensions WHERE tenant_id = $1 AND lifted_at IS NULL",
        )
        .bind(tenant.0)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn list_suspensions(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<SuspensionRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, principal, reason, created_at, lifted_at, lifted_by FROM suspensions
             WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT 500",
        )
        .bind(tenant.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SuspensionRecord {
                    id: row.try_get("id")?,
                    tenant_id: TenantId(row.try_get("tenant_id")?),
                    principal: row.try_get("principal")?,
                    reason: row.try_get("reason")?,
                    created_at: row.try_get("created_at")?,
                    lifted_at: row.try_get("lifted_at")?,
                    lifted_by: row.try_get("lifted_by")?,
                })
            })
            .collect()
    }

    /// Lifts a suspension, with its audit row; false when there was no active one with that id.
    pub async fn lift_suspension(
        &self,
        tenant: TenantId,
        id: Uuid,
        lifted_by: &str,
        audit_entry: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let lifted = sqlx::query(
            "UPDATE suspensions SET lifted_at = now(), lifted_by = $3
             WHERE tenant_id = $1 AND id = $2 AND lifted_at IS NULL",
        )
        .bind(tenant.0)
        .bind(id)
        .bind(lifted_by)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if lifted {
            audit::insert(&mut tx, audit_entry).await?;
        }
        tx.commit().await?;
        Ok(lifted)
    }
}
