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
    /// Position in the hash chain.
    pub seq: i64,
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

/// The statement that appends a batch of events from six arrays bound from `$first` on (see
/// [`bind_many`]); also used as a data-modifying `WITH` part of the metering writer's one statement.
pub(crate) fn insert_many_sql(first: usize) -> String {
    let [tenant, actor, action, target, request_id, details] =
        std::array::from_fn::<usize, 6, _>(|i| first + i);
    // Rows are inserted, and so chained, in the order the SELECT yields them.
    format!(
        "INSERT INTO audit_log (tenant_id, actor, action, target, request_id, details)
         SELECT tenant_id, actor, action, target, request_id, details
         FROM UNNEST(${tenant}::uuid[], ${actor}::text[], ${action}::text[], ${target}::text[],
             ${request_id}::text[], ${details}::jsonb[])
             WITH ORDINALITY AS e(tenant_id, actor, action, target, request_id, details, n)
         ORDER BY n"
    )
}

/// Binds `entries` as the six arrays [`insert_many_sql`] reads, in its order.
pub(crate) fn bind_many<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    entries: &'q [AuditEntry],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let tenant: Vec<Option<uuid::Uuid>> =
        entries.iter().map(|e| e.tenant_id.map(|t| t.0)).collect();
    let actor: Vec<&str> = entries.iter().map(|e| e.actor.as_str()).collect();
    let action: Vec<&str> = entries.iter().map(|e| e.action).collect();
    let target: Vec<Option<&str>> = entries.iter().map(|e| e.target.as_deref()).collect();
    let request_id: Vec<Option<&str>> = entries.iter().map(|e| e.request_id.as_deref()).collect();
    let details: Vec<&serde_json::Value> = entries.iter().map(|e| &e.details).collect();
    query
        .bind(tenant)
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(request_id)
        .bind(details)
}

/// Events checked per query while verifying, so a long log never sits in memory.
const VERIFY_PAGE: i64 = 5_000;

/// The outcome of walking the audit hash chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditVerification {
    /// Events whose links were checked.
    pub checked: u64,
    /// The chain head recorded by the database (last sequence number).
    pub head_seq: i64,
    /// The first sequence number where the chain breaks, and how.
    pub first_bad_seq: Option<i64>,
    pub problem: Option<AuditProblem>,
}

impl AuditVerification {
    pub fn is_intact(&self) -> bool {
        self.first_bad_seq.is_none()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditProblem {
    /// The event's content no longer matches its hash (edited, or moved to another position).
    Edited,
    /// Events before this one are missing (deleted).
    Missing,
    /// The event does not link to the one before it (reordered or replaced).
    Unlinked,
    /// The chain ends before the recorded head (events deleted from the end).
    Truncated,
}

impl Store {
    /// Walks the audit chain in sequence order up to the head read first (events appended meanwhile are
    /// left for the next check): each event must link to the previous event's hash, hash to what its content
    /// says, and the last must be the recorded head. Reports the first break.
    pub async fn verify_audit_chain(&self) -> Result<AuditVerification, StoreError> {
        let (head_seq, head_hash): (i64, Vec<u8>) =
            sqlx::query_as("SELECT seq, hash FROM audit_head")
                .fetch_one(&self.pool)
                .await?;
        let mut expected_prev = vec![0u8; 32];
        let mut expected_seq = 1i64;
        let mut checked = 0u64;
        let broken = |seq: i64, problem: AuditProblem, checked: u64| AuditVerification {
            checked,
            head_seq,
            first_bad_seq: Some(seq),
            problem: Some(problem),
        };
        loop {
            let rows = sqlx::query(
                "SELECT seq, prev_hash, hash,
                        audit_row_digest(prev_hash, seq, at, tenant_id, actor, action, target, request_id,
                                         details) AS recomputed
                 FROM audit_log WHERE seq >= $1 AND seq <= $3 ORDER BY seq LIMIT $2",
            )
            .bind(expected_seq)
            .bind(VERIFY_PAGE)
            .bind(head_seq)
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                let seq: i64 = row.try_get("seq")?;
                let prev: Vec<u8> = row.try_get("prev_hash")?;
                let hash: Vec<u8> = row.try_get("hash")?;
                let recomputed: Vec<u8> = row.try_get("recomputed")?;
                if seq != expected_seq {
                    return Ok(broken(expected_seq, AuditProblem::Missing, checked));
                }
                if prev != expected_prev {
                    return Ok(broken(seq, AuditProblem::Unlinked, checked));
                }
                if hash != recomputed {
                    return Ok(broken(seq, AuditProblem::Edited, checked));
                }
                checked += 1;
                expected_prev = hash;
                expected_seq += 1;
            }
        }
        let last = expected_seq - 1;
        if last != head_seq || (last > 0 && expected_prev != head_hash) {
            return Ok(broken(expected_seq, AuditProblem::Truncated, checked));
        }
        Ok(AuditVerification {
            checked,
            head_seq,
            first_bad_seq: None,
            problem: None,
        })
    }

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
            "SELECT id, seq, at, tenant_id, actor, action, target, request_id, details
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
                    seq: row.try_get("seq")?,
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
