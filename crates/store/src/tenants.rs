use crate::audit::{self, AuditEntry};
use crate::error::is_unique_violation;
use crate::keys::{api_key_from_row, insert_api_key, ApiKeyRecord, NewApiKey, API_KEY_COLUMNS};
use crate::{Store, StoreError};
use ragvault_core::{Environment, TenantId, TenantStatus};
use sqlx::postgres::PgRow;
use sqlx::Row;
use time::OffsetDateTime;

/// A tenant to insert. The slug arrives only as a keyed hash (for lookup) and sealed (for display).
#[derive(Clone, Debug)]
pub struct NewTenant {
    pub id: TenantId,
    pub slug_hash: Vec<u8>,
    pub slug_sealed: Vec<u8>,
    pub environment: Environment,
}

/// A tenant row. The slug is sealed; rows from before sealed slugs carry `legacy_slug` until the service
/// seals it at start.
#[derive(Clone, Debug)]
pub struct TenantRecord {
    pub id: TenantId,
    pub slug_sealed: Option<Vec<u8>>,
    pub legacy_slug: Option<String>,
    pub status: TenantStatus,
    pub environment: Environment,
    /// Per-tenant policy (JSON object); keys are interpreted by the crates that enforce them.
    pub policy: serde_json::Value,
    pub created_at: OffsetDateTime,
}

const TENANT_COLUMNS: &str = "id, slug, slug_sealed, status, environment, policy, created_at";

fn tenant_from_row(row: &PgRow) -> Result<TenantRecord, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        table: "tenants",
        reason,
    };
    let status: String = row.try_get("status")?;
    let environment: String = row.try_get("environment")?;
    Ok(TenantRecord {
        id: TenantId(row.try_get("id")?),
        slug_sealed: row.try_get("slug_sealed")?,
        legacy_slug: row.try_get("slug")?,
        status: status.parse().map_err(|e| corrupt(format!("{e}")))?,
        environment: environment.parse().map_err(|e| corrupt(format!("{e}")))?,
        policy: row.try_get("policy")?,
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
            "INSERT INTO tenants (id, slug_hash, slug_sealed, environment) VALUES ($1, $2, $3, $4)
             RETURNING {TENANT_COLUMNS}"
        ))
        .bind(tenant.id.0)
        .bind(&tenant.slug_hash)
        .bind(&tenant.slug_sealed)
        .bind(tenant.environment.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e, "tenants_slug_hash_key")
                || is_unique_violation(&e, "tenants_slug_key")
            {
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
            "SELECT {TENANT_COLUMNS} FROM tenants ORDER BY created_at, id"
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

    /// Finds a tenant by the keyed hash of its slug (or, for a row not yet sealed, by the slug itself).
    pub async fn get_tenant_by_slug(
        &self,
        slug_hash: &[u8],
        slug: &str,
    ) -> Result<TenantRecord, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE slug_hash = $1 OR slug = $2"
        ))
        .bind(slug_hash)
        .bind(slug)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("tenant"))?;
        tenant_from_row(&row)
    }

    /// Replaces the tenant's policy, with its audit row, in one transaction.
    pub async fn set_tenant_policy(
        &self,
        id: TenantId,
        policy: &serde_json::Value,
        audit_entry: &AuditEntry,
    ) -> Result<TenantRecord, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(&format!(
            "UPDATE tenants SET policy = $2, updated_at = now() WHERE id = $1 RETURNING {TENANT_COLUMNS}"
        ))
        .bind(id.0)
        .bind(policy)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound("tenant"))?;
        audit::insert(&mut tx, audit_entry).await?;
        tx.commit().await?;
        tenant_from_row(&row)
    }

    /// Tenants whose slug is still stored in the clear (written before slugs were sealed).
    pub async fn tenants_with_clear_slugs(&self) -> Result<Vec<(TenantId, String)>, StoreError> {
        let rows = sqlx::query("SELECT id, slug FROM tenants WHERE slug IS NOT NULL")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((TenantId(row.try_get("id")?), row.try_get("slug")?)))
            .collect()
    }

    /// Replaces a clear slug by its hash and sealed form.
    pub async fn seal_clear_slug(
        &self,
        id: TenantId,
        slug_hash: &[u8],
        slug_sealed: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE tenants SET slug_hash = $2, slug_sealed = $3, slug = NULL WHERE id = $1 AND slug IS NOT NULL",
        )
        .bind(id.0)
        .bind(slug_hash)
        .bind(slug_sealed)
        .execute(&self.pool)
        .await?;
        Ok(())
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
