use crate::{Store, StoreError};
use ragvault_core::TenantId;
use serde::Serialize;
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;

/// One event to append to the audit log. Never carries key material or content: ids and names only.
#[derive(Clone, Debug)]
pub struct AuditEntry {
    pub tenant_id: Option<TenantId>,
    pub actor: String,
    pub action: &'static str,
    pub target: Option<String>,
    pub request_id: Option<String>,
    pub details: serde_json::Value,
}

impl AuditEntry {
    pub fn new(actor: impl Into<String>, action: &'static str) -> AuditEntry {
        AuditEntry {
            tenant_id: None,
            actor: actor.into(),
            action,
            target: None,
            request_id: None,
            details: serde_json::Value::Object(Default::default()),
        }
    }

    pub fn tenant(mut self, tenant_id: TenantId) -> Self {
        self.tenant_id = Some(tenant_id);
        self
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn request_id(mut self, request_id: Option<String>) -> Self {
        self.request_id = request_id;
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// An audit row as stored.
#[derive(Clone, Debug, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub tenant_id: Option<TenantId>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub request_id: Option<String>,
    pub details: serde_json::Value,
}

pub(crate) async fn insert(conn: &mut PgConnection, entry: &AuditEntry) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (tenant_id, actor, action, target, request_id, details)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(entry.tenant_id.map(|t| t.0))
    .bind(&entry.actor)
    .bind(entry.action)
    .bind(&entry.target)
    .bind(&entry.request_id)
    .bind(&entry.details)
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// Appends one event outside any other change (for events that are not part of a write, such as a
    /// refused operator action).
    pub async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        insert(&mut conn, entry).await
    }

    /// Audit events in id order, optionally for one tenant, starting after an id (for paging).
    pub async fn list_audit(
        &self,
        tenant_id: Option<TenantId>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, tenant_id, actor, action, target, request_id, details
             FROM audit_log
             WHERE id > $1 AND ($2::uuid IS NULL OR tenant_id = $2)
             ORDER BY id
             LIMIT $3",
        )
        .bind(after_id)
        .bind(tenant_id.map(|t| t.0))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(AuditRecord {
                    id: row.try_get("id")?,
                    at: row.try_get("at")?,
                    tenant_id: row
                        .try_get::<Option<uuid::Uuid>, _>("tenant_id")?
                        .map(TenantId),
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    target: row.try_get("target")?,
                    request_id: row.try_get("request_id")?,
                    details: row.try_get("details")?,
                })
            })
            .collect()
    }
}
