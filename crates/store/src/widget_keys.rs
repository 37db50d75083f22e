//! Ids of widget-token signing keys (never the keys: those are derived by the credentials crate).

use crate::audit::{self, AuditEntry};
use crate::{Store, StoreError};
use sqlx::Row;
use time::OffsetDateTime;

/// One signing key id and how long it may be used.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WidgetSigningKeyRecord {
    pub kid: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Set once the key no longer signs.
    #[serde(with = "time::serde::rfc3339::option")]
    pub retired_at: Option<OffsetDateTime>,
    /// Tokens signed with a retired key are refused after this.
    #[serde(with = "time::serde::rfc3339::option")]
    pub verify_until: Option<OffsetDateTime>,
}

/// Serialises key creation across replicas (an arbitrary constant: "widget" in ASCII).
const SIGNING_KEY_LOCK: i64 = 0x77_69_64_67_65_74;

impl Store {
    /// Every key id that may still verify, newest first.
    pub async fn widget_signing_keys(&self) -> Result<Vec<WidgetSigningKeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, created_at, retired_at, verify_until FROM widget_signing_keys
             WHERE verify_until IS NULL OR verify_until > now()
             ORDER BY created_at DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(WidgetSigningKeyRecord {
                    kid: row.try_get("kid")?,
                    created_at: row.try_get("created_at")?,
                    retired_at: row.try_get("retired_at")?,
                    verify_until: row.try_get("verify_until")?,
                })
            })
            .collect()
    }

    /// Makes sure a signing key exists: inserts `candidate_kid` unless some key is already active. Safe
    /// when several replicas start at once.
    pub async fn ensure_widget_signing_key(&self, candidate_kid: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SIGNING_KEY_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO widget_signing_keys (kid)
             SELECT $1 WHERE NOT EXISTS (SELECT 1 FROM widget_signing_keys WHERE retired_at IS NULL)",
        )
        .bind(candidate_kid)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Retires every active signing key (verifying until `grace` from now) and makes `new_kid` the one
    /// that signs, with its audit row in the same transaction.
    pub async fn rotate_widget_signing_key(
        &self,
        new_kid: &str,
        grace: time::Duration,
        audit_entry: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SIGNING_KEY_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE widget_signing_keys
             SET retired_at = clock_timestamp(), verify_until = clock_timestamp() + $1
             WHERE retired_at IS NULL",
        )
        .bind(grace)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO widget_signing_keys (kid) VALUES ($1)")
            .bind(new_kid)
            .execute(&mut *tx)
            .await?;
        audit::insert(&mut tx, audit_entry).await?;
        tx.commit().await?;
        Ok(())
    }
}
