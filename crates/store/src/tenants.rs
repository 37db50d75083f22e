use crate::audit::{self, AuditEntry};
use crate::error::is_unique_violation;
use crate::keys::{api_key_from_row, insert_api_key, ApiKeyRecord, NewApiKey, API_KEY_COLUMNS};
use crate::{Store, StoreError};
use ragvault_core::{Environment, TenantId, TenantSlug, TenantStatus};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::Row;
use time::OffsetDateTime;

#[derive(Clone, Debug)]
pub struct NewTenant {
    pub id: TenantId,
    pub slug: TenantSlug,
    pub environment: Environment,
}

#[derive(Clone, Debug, Serialize)]
pub struct TenantRecord {
    pub id: TenantId,
    pub slug: String,
    pub status: TenantStatus,
    pub environment: Environment,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

const TENANT_COLUMNS: &str = "id, slug, status, environment, created_at";

fn tenant_from_row(row: &PgRow) -> Result<TenantRecord, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        table: "tenants",
        reason,
    };
    let status: String = row.try_get("status")?;
    let environment: String = row.try_get("environment")?;
    Ok(TenantRecord {
        id: TenantId(row.try_get("id")?),
        slug: row.try_get("slug")?,
        status: status.parse().map_err(|e| corrupt(format!("{e}")))?,
        environment: environment.parse().map_err(|e| corrupt(format!("{e}")))?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// Creates a tenant together with its first API key, its wrapped data keys and the audit rows, in one
    /// transaction: a tenant never exists without the key shown to its creator or without its data keys.
    pub async fn create_tenant(
        &self,
        tenant: &NewTenant,
        first_key: &NewApiKey,
        data_keys: &[crate::NewDataKey],
        audit_entries: &[AuditEntry],
    ) -> Result<(TenantRecord, ApiKeyRecord), StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(&format!(
            "INSERT INTO tenants (id, slug, environment) VALUES ($1, $2, $3) RETURNING {TENANT_COLUMNS}"
        ))
        .bind(tenant.id.0)
        .bind(tenant.slug.as_str())
        .bind(tenant.environment.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e, "tenants_slug_key") {
                StoreError::SlugTaken
            } else {
                StoreError::Database(e)
            }
        })?;
        let record = tenant_from_row(&row)?;
        let key = insert_api_key(&mut tx, first_key).await?;
        for data_key in data_keys {
            crate::data_keys::insert(&mut tx, tenant.id, data_key).await?;
        }
        for entry in audit_entries {
            audit::insert(&mut tx, entry).await?;
        }
        tx.commit().await?;
        Ok((record, key))
    }

    pub async fn list_tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants ORDER BY created_at, slug"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    pub async fn get_tenant(&self, id: TenantId) -> Result<TenantRecord, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"
        ))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("tenant"))?;
        tenant_from_row(&row)
    }

    pub async fn get_tenant_by_slug(&self, slug: &str) -> Result<TenantRecord, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE slug = $1"
        ))
        .bind(slug)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("tenant"))?;
        tenant_from_row(&row)
    }

    /// Suspends or resumes a tenant. The audit row is written only when the status really changes.
    pub async fn set_tenant_status(
        &self,
        id: TenantId,
        status: TenantStatus,
        audit_entry: &AuditEntry,
    ) -> Result<TenantRecord, StoreError> {
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(&format!(
            "UPDATE tenants SET status = $2, updated_at = now()
             WHERE id = $1 AND status <> $2 RETURNING {TENANT_COLUMNS}"
        ))
        .bind(id.0)
        .bind(status.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let record = match changed {
            Some(row) => {
                audit::insert(&mut tx, audit_entry).await?;
                tenant_from_row(&row)?
            }
            None => {
                let row = sqlx::query(&format!(
                    "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"
                ))
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound("tenant"))?;
                tenant_from_row(&row)?
            }
        };
        tx.commit().await?;
        Ok(record)
    }

    /// The tenant's keys, newest first, without hashes.
    pub async fn list_api_keys(
        &self,
        tenant_id: TenantId,
    ) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at DESC, id"
        ))
        .bind(tenant_id.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(api_key_from_row).collect()
    }
}
