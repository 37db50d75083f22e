use crate::audit::{self, AuditEntry};
use crate::{Store, StoreError};
use ragvault_core::{ApiKeyId, OperatorKeyId, Scopes, TenantId, TenantStatus};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    pub public_id: String,
    /// Keyed hash of the whole key, computed by the credentials crate.
    pub key_hash: Vec<u8>,
    pub name: Option<String>,
    pub scopes: Scopes,
    pub expires_at: Option<OffsetDateTime>,
    /// Access groups; `None` = the whole tenant.
    pub groups: Option<Vec<String>>,
}

#[derive(Clone, Debug)]
pub struct NewOperatorKey {
    pub id: OperatorKeyId,
    pub public_id: String,
    pub key_hash: Vec<u8>,
    pub name: Option<String>,
    pub expires_at: Option<OffsetDateTime>,
}

/// A tenant API key as listed: never the key, never the hash.
#[derive(Clone, Debug, Serialize)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    /// The non-secret lookup part of the key (`rvk_<public_id>_...`), so users can tell keys apart.
    pub public_id: String,
    pub name: Option<String>,
    pub scopes: Scopes,
    /// Access groups; absent = the whole tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    Tenant,
    Operator,
}

/// What authentication needs to decide about a presented key.
#[derive(Clone, Debug)]
pub struct CredentialRow {
    pub kind: CredentialKind,
    pub id: Uuid,
    pub tenant_id: Option<TenantId>,
    pub key_hash: Vec<u8>,
    pub scopes: Scopes,
    pub expires_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
    pub tenant_status: Option<TenantStatus>,
    /// A tenant key's access groups; `None` = the whole tenant.
    pub groups: Option<Vec<String>>,
}

pub(crate) const API_KEY_COLUMNS: &str =
    "id, tenant_id, public_id, name, scopes, groups, expires_at, revoked_at, last_used_at, created_at";

fn parse_scopes(table: &'static str, names: Vec<String>) -> Result<Scopes, StoreError> {
    Scopes::parse(&names).map_err(|e| StoreError::Corrupt {
        table,
        reason: e.to_string(),
    })
}

pub(crate) fn api_key_from_row(row: &PgRow) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id: ApiKeyId(row.try_get("id")?),
        tenant_id: TenantId(row.try_get("tenant_id")?),
        public_id: row.try_get("public_id")?,
        name: row.try_get("name")?,
        scopes: parse_scopes("api_keys", row.try_get("scopes")?)?,
        groups: row.try_get("groups")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        last_used_at: row.try_get("last_used_at")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(crate) async fn insert_api_key(
    conn: &mut PgConnection,
    key: &NewApiKey,
) -> Result<ApiKeyRecord, StoreError> {
    let row = sqlx::query(&format!(
        "INSERT INTO api_keys (id, tenant_id, public_id, key_hash, name, scopes, expires_at, groups)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {API_KEY_COLUMNS}"
    ))
    .bind(key.id.0)
    .bind(key.tenant_id.0)
    .bind(&key.public_id)
    .bind(&key.key_hash)
    .bind(&key.name)
    .bind(key.scopes.names())
    .bind(key.expires_at)
    .bind(&key.groups)
    .fetch_one(conn)
    .await?;
    api_key_from_row(&row)
}

impl Store {
    /// Issues another key for an existing tenant.
    pub async fn insert_api_key(
        &self,
        key: &NewApiKey,
        audit_entry: &AuditEntry,
    ) -> Result<ApiKeyRecord, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Lock the tenant row so a concurrent tenant deletion cannot interleave.
        sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR SHARE")
            .bind(key.tenant_id.0)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound("tenant"))?;
        let record = insert_api_key(&mut tx, key).await?;
        audit::insert(&mut tx, audit_entry).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// Revokes a tenant's key. Revoking an already revoked key changes nothing and writes no audit row.
    pub async fn revoke_api_key(
        &self,
        tenant_id: TenantId,
        key_id: ApiKeyId,
        audit_entry: &AuditEntry,
    ) -> Result<ApiKeyRecord, StoreError> {
        let mut tx = self.pool.begin().await?;
        let revoked = sqlx::query(&format!(
            "UPDATE api_keys SET revoked_at = now()
             WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL RETURNING {API_KEY_COLUMNS}"
        ))
        .bind(key_id.0)
        .bind(tenant_id.0)
        .fetch_optional(&mut *tx)
        .await?;
        let record = match revoked {
            Some(row) => {
                audit::insert(&mut tx, audit_entry).await?;
                api_key_from_row(&row)?
            }
            None => {
                let row = sqlx::query(&format!(
                    "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = $1 AND tenant_id = $2"
                ))
                .bind(key_id.0)
                .bind(tenant_id.0)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound("api key"))?;
                api_key_from_row(&row)?
            }
        };
        tx.commit().await?;
        Ok(record)
    }

    pub async fn insert_operator_key(
        &self,
        key: &NewOperatorKey,
        audit_entry: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO operator_keys (id, public_id, key_hash, name, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(key.id.0)
        .bind(&key.public_id)
        .bind(&key.key_hash)
        .bind(&key.name)
        .bind(key.expires_at)
        .execute(&mut *tx)
        .await?;
        audit::insert(&mut tx, audit_entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revokes an operator key; returns false when no such key exists.
    pub async fn revoke_operator_key(
        &self,
        key_id: OperatorKeyId,
        audit_entry: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let exists = sqlx::query(
            "SELECT revoked_at IS NULL AS active FROM operator_keys WHERE id = $1 FOR UPDATE",
        )
        .bind(key_id.0)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = exists else {
            return Ok(false);
        };
        if row.try_get::<bool, _>("active")? {
            sqlx::query("UPDATE operator_keys SET revoked_at = now() WHERE id = $1")
                .bind(key_id.0)
                .execute(&mut *tx)
                .await?;
            audit::insert(&mut tx, audit_entry).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Every credential (tenant or operator) with this public id. Normally zero or one row; the caller
    /// verifies the hash of each.
    pub async fn find_credentials(
        &self,
        public_id: &str,
    ) -> Result<Vec<CredentialRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT 'tenant' AS kind, k.id, k.tenant_id, k.key_hash, k.scopes, k.expires_at,
                    k.revoked_at, t.status AS tenant_status, k.groups
             FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
             WHERE k.public_id = $1
             UNION ALL
             SELECT 'operator', o.id, NULL, o.key_hash, ARRAY[]::text[], o.expires_at,
                    o.revoked_at, NULL, NULL::text[]
             FROM operator_keys o
             WHERE o.public_id = $1",
        )
        .bind(public_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let kind: String = row.try_get("kind")?;
                let kind = if kind == "tenant" {
                    CredentialKind::Tenant
                } else {
                    CredentialKind::Operator
                };
                let tenant_status = row
                    .try_get::<Option<String>, _>("tenant_status")?
                    .map(|s| {
                        s.parse().map_err(|e| StoreError::Corrupt {
                            table: "tenants",
                            reason: format!("{e}"),
                        })
                    })
                    .transpose()?;
                Ok(CredentialRow {
                    kind,
                    id: row.try_get("id")?,
                    tenant_id: row.try_get::<Option<Uuid>, _>("tenant_id")?.map(TenantId),
                    key_hash: row.try_get("key_hash")?,
                    scopes: parse_scopes("api_keys", row.try_get("scopes")?)?,
                    expires_at: row.try_get("expires_at")?,
                    revoked_at: row.try_get("revoked_at")?,
                    tenant_status,
                    groups: row.try_get("groups")?,
                })
            })
            .collect()
    }

    /// Records that a key was used. At most one write per key per minute, so a busy key does not turn
    /// every request into a write.
    pub async fn touch_last_used(&self, kind: CredentialKind, id: Uuid) -> Result<(), StoreError> {
        let sql = match kind {
            CredentialKind::Tenant => {
                "UPDATE api_keys SET last_used_at = now()
                 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')"
            }
            CredentialKind::Operator => {
                "UPDATE operator_keys SET last_used_at = now()
                 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')"
            }
        };
        sqlx::query(sql).bind(id).execute(&self.pool).await?;
        Ok(())
    }
}
