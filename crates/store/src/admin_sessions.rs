//! Operator dashboard sessions (keyed token hashes only).

use crate::audit::{self, AuditEntry};
use crate::{Store, StoreError};
use ragvault_core::OperatorKeyId;
use time::OffsetDateTime;
use uuid::Uuid;

/// A live session: its id and the operator key it acts as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminSession {
    pub id: Uuid,
    pub operator_key_id: OperatorKeyId,
    pub expires_at: OffsetDateTime,
}

impl Store {
    /// Starts a session, with its audit row.
    pub async fn insert_admin_session(
        &self,
        token_hash: &[u8],
        operator_key_id: OperatorKeyId,
        expires_at: OffsetDateTime,
        audit_entry: &AuditEntry,
    ) -> Result<Uuid, StoreError> {
        let id = Uuid::new_v4();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO admin_sessions (id, token_hash, operator_key_id, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(token_hash)
        .bind(operator_key_id.0)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        audit::insert(
            &mut tx,
            &audit_entry.clone().target(format!("admin_session:{id}")),
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The session a token hash names, if it is live: not ended, not expired, and its operator key neither
    /// revoked nor expired.
    pub async fn live_admin_session(
        &self,
        token_hash: &[u8],
    ) -> Result<Option<AdminSession>, StoreError> {
        let row: Option<(Uuid, Uuid, OffsetDateTime)> = sqlx::query_as(
            "SELECT s.id, s.operator_key_id, s.expires_at FROM admin_sessions s
             JOIN operator_keys o ON o.id = s.operator_key_id
             WHERE s.token_hash = $1 AND s.ended_at IS NULL AND s.expires_at > now()
               AND o.revoked_at IS NULL AND (o.expires_at IS NULL OR o.expires_at > now())",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(id, key, expires_at)| AdminSession {
            id,
            operator_key_id: OperatorKeyId(key),
            expires_at,
        }))
    }

    /// Ends a session (logout), with its audit row; false when it was not live.
    pub async fn end_admin_session(
        &self,
        id: Uuid,
        audit_entry: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let ended = sqlx::query(
            "UPDATE admin_sessions SET ended_at = now() WHERE id = $1 AND ended_at IS NULL",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if ended {
            audit::insert(
                &mut tx,
                &audit_entry.clone().target(format!("admin_session:{id}")),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(ended)
    }
}
