use crate::audit::{self, AuditEntry};
use crate::{Store, StoreError};
use ragvault_core::TenantId;
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKeyPurpose {
    Content,
    Index,
}

impl DataKeyPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            DataKeyPurpose::Content => "content",
            DataKeyPurpose::Index => "index",
        }
    }
}

/// A wrapped data key to store. The wrapped form is useless without the tenant's KEK.
#[derive(Clone, Debug)]
pub struct NewDataKey {
    pub id: Uuid,
    pub purpose: DataKeyPurpose,
    pub wrapped_key: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct DataKeyRecord {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub purpose: DataKeyPurpose,
    #[serde(skip)]
    pub wrapped_key: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub retired_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub rewrapped_at: Option<OffsetDateTime>,
}

const COLUMNS: &str = "id, tenant_id, purpose, wrapped_key, created_at, retired_at, rewrapped_at";

fn from_row(row: &PgRow) -> Result<DataKeyRecord, StoreError> {
    let purpose: String = row.try_get("purpose")?;
    let purpose = match purpose.as_str() {
        "content" => DataKeyPurpose::Content,
        "index" => DataKeyPurpose::Index,
        other => {
            return Err(StoreError::Corrupt {
                table: "data_keys",
                reason: format!("unknown purpose `{other}`"),
            })
        }
    };
    Ok(DataKeyRecord {
        id: row.try_get("id")?,
        tenant_id: TenantId(row.try_get("tenant_id")?),
        purpose,
        wrapped_key: row.try_get("wrapped_key")?,
        created_at: row.try_get("created_at")?,
        retired_at: row.try_get("retired_at")?,
        rewrapped_at: row.try_get("rewrapped_at")?,
    })
}

pub(crate) async fn insert(
    conn: &mut PgConnection,
    tenant: TenantId,
    key: &NewDataKey,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO data_keys (id, tenant_id, purpose, wrapped_key) VALUES ($1, $2, $3, $4)",
    )
    .bind(key.id)
    .bind(tenant.0)
    .bind(key.purpose.as_str())
    .bind(&key.wrapped_key)
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    pub async fn list_data_keys(&self, tenant: TenantId) -> Result<Vec<DataKeyRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM data_keys WHERE tenant_id = $1 ORDER BY created_at, id"
        ))
        .bind(tenant.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// The key that takes new writes for a purpose.
    pub async fn active_data_key(
        &self,
        tenant: TenantId,
        purpose: DataKeyPurpose,
    ) -> Result<DataKeyRecord, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM data_keys WHERE tenant_id = $1 AND purpose = $2 AND retired_at IS NULL"
        ))
        .bind(tenant.0)
        .bind(purpose.as_str())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("data key"))?;
        from_row(&row)
    }

    /// After a KEK rotation: stores every rewrapped key, retires the active content key and makes
    /// `new_content` the key for new writes, with the audit row, in one transaction.
    pub async fn apply_key_rotation(
        &self,
        tenant: TenantId,
        rewrapped: &[(Uuid, String)],
        new_content: &NewDataKey,
        audit_entry: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE")
            .bind(tenant.0)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound("tenant"))?;
        for (id, wrapped) in rewrapped {
            sqlx::query(
                "UPDATE data_keys SET wrapped_key = $3, rewrapped_at = now() WHERE id = $1 AND tenant_id = $2",
            )
            .bind(id)
            .bind(tenant.0)
            .bind(wrapped)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE data_keys SET retired_at = now()
             WHERE tenant_id = $1 AND purpose = 'content' AND retired_at IS NULL",
        )
        .bind(tenant.0)
        .execute(&mut *tx)
        .await?;
        insert(&mut tx, tenant, new_content).await?;
        audit::insert(&mut tx, audit_entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a tenant and everything that cascades from it (keys, data keys), with the audit row, in one
    /// transaction. Returns false if no such tenant existed.
    pub async fn delete_tenant(
        &self,
        tenant: TenantId,
        audit_entry: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM tenants WHERE id = $1")
            .bind(tenant.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Ok(false);
        }
        audit::insert(&mut tx, audit_entry).await?;
        tx.commit().await?;
        Ok(true)
    }
}
