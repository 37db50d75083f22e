//! Ingest jobs: the sealed upload, its status and outcome.

use crate::{Store, StoreError};
use ragvault_core::{DocumentId, JobId, TenantId};
use sqlx::postgres::PgRow;
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Clone, Debug)]
pub struct NewJob {
    pub id: JobId,
    pub tenant_id: TenantId,
    pub document_id: DocumentId,
    pub data_key_id: Uuid,
    /// The uploaded bytes, sealed.
    pub payload_sealed: Vec<u8>,
    /// Name, content type and metadata, sealed.
    pub header_sealed: Vec<u8>,
    pub size_bytes: i64,
    /// Keyed hash of the document name, as `documents.name_hash`.
    pub name_hash: Vec<u8>,
    /// Keyed hash of the content and metadata, as `documents.content_hash`.
    pub content_hash: Vec<u8>,
}

/// What an upload's keyed hashes matched before a job was made for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadMatch {
    /// The newest job still under way for this name carries the same content: it is that upload again.
    Pending { job: JobId, document: DocumentId },
    /// No job is under way for this name and the live document has this content already.
    Stored { document: DocumentId, chunks: i32 },
}

#[derive(Clone, Debug)]
pub struct JobRecord {
    pub id: JobId,
    pub tenant_id: TenantId,
    pub document_id: DocumentId,
    pub status: String,
    pub data_key_id: Option<Uuid>,
    pub payload_sealed: Option<Vec<u8>>,
    pub header_sealed: Option<Vec<u8>>,
    pub size_bytes: i64,
    pub chunks: Option<i32>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub attempts: i32,
    pub created_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
}

const COLUMNS: &str =
    "id, tenant_id, document_id, status, data_key_id, payload_sealed, header_sealed, size_bytes, \
                       chunks, error_code, error_message, attempts, created_at, finished_at";

fn from_row(row: &PgRow) -> Result<JobRecord, StoreError> {
    Ok(JobRecord {
        id: JobId(row.try_get("id")?),
        tenant_id: TenantId(row.try_get("tenant_id")?),
        document_id: DocumentId(row.try_get("document_id")?),
        status: row.try_get("status")?,
        data_key_id: row.try_get("data_key_id")?,
        payload_sealed: row.try_get("payload_sealed")?,
        header_sealed: row.try_get("header_sealed")?,
        size_bytes: row.try_get("size_bytes")?,
        chunks: row.try_get("chunks")?,
        error_code: row.try_get("error_code")?,
        error_message: row.try_get("error_message")?,
        attempts: row.try_get("attempts")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

impl Store {
    pub async fn insert_job(&self, job: &NewJob) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO ingest_jobs (id, tenant_id, document_id, data_key_id, payload_sealed, header_sealed, size_bytes,
                                      name_hash, content_hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(job.id.0)
        .bind(job.tenant_id.0)
        .bind(job.document_id.0)
        .bind(job.data_key_id)
        .bind(&job.payload_sealed)
        .bind(&job.header_sealed)
        .bind(job.size_bytes)
        .bind(&job.name_hash)
        .bind(&job.content_hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether an upload with these keyed hashes is already stored or on its way (see [`UploadMatch`]). A job
    /// under way for the same name with other content means this upload must be queued after it.
    pub async fn match_upload(
        &self,
        tenant: TenantId,
        name_hash: &[u8],
        content_hash: &[u8],
    ) -> Result<Option<UploadMatch>, StoreError> {
        let newest: Option<(Uuid, Uuid, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT id, document_id, content_hash FROM ingest_jobs
             WHERE tenant_id = $1 AND name_hash = $2 AND status IN ('queued', 'running', 'indexing')
             ORDER BY created_at DESC LIMIT 1",
        )
        .bind(tenant.0)
        .bind(name_hash)
        .fetch_optional(&self.pool)
        .await?;
        if let Some((job, document, hash)) = newest {
            return Ok(
                (hash.as_deref() == Some(content_hash)).then_some(UploadMatch::Pending {
                    job: JobId(job),
                    document: DocumentId(document),
                }),
            );
        }
        let stored: Option<(Uuid, i32)> = sqlx::query_as(
            "SELECT id, chunk_count FROM documents
             WHERE tenant_id = $1 AND name_hash = $2 AND content_hash = $3 AND status = 'active'",
        )
        .bind(tenant.0)
        .bind(name_hash)
        .bind(content_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(stored.map(|(document, chunks)| UploadMatch::Stored {
            document: DocumentId(document),
            chunks,
        }))
    }

    /// Records an upload that matched the live document as a job already `done` (no payload kept), so the
    /// caller gets a job to show like any other.
    pub async fn insert_unchanged_job(
        &self,
        id: JobId,
        tenant: TenantId,
        document: DocumentId,
        chunks: i32,
        size_bytes: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO ingest_jobs (id, tenant_id, document_id, status, size_bytes, chunks, finished_at)
             VALUES ($1, $2, $3, 'done', $4, $5, now())",
        )
        .bind(id.0)
        .bind(tenant.0)
        .bind(document.0)
        .bind(size_bytes)
        .bind(chunks)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_job(&self, tenant: TenantId, id: JobId) -> Result<JobRecord, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM ingest_jobs WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant.0)
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("job"))?;
        from_row(&row)
    }

    /// Claims a job for processing: marks it running and counts the attempt. None if it is finished.
    pub async fn claim_job(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "UPDATE ingest_jobs SET status = 'running', attempts = attempts + 1
             WHERE id = $1 AND status IN ('queued', 'running') RETURNING {COLUMNS}"
        ))
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Jobs a previous process left unfinished (created before `started_at`, this process's start), oldest
    /// first. Jobs submitted since are already in this process's queue and must not be queued twice.
    pub async fn unfinished_jobs(
        &self,
        started_at: time::OffsetDateTime,
    ) -> Result<Vec<(TenantId, JobId)>, StoreError> {
        let ids: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT tenant_id, id FROM ingest_jobs WHERE status IN ('queued', 'running') AND created_at < $1
             ORDER BY created_at",
        )
        .bind(started_at)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids
            .into_iter()
            .map(|(tenant, job)| (TenantId(tenant), JobId(job)))
            .collect())
    }

    /// A stored job's points are in the index: it is done.
    pub async fn finish_indexed_job(&self, id: JobId) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE ingest_jobs SET status = 'done', finished_at = now()
             WHERE id = $1 AND status = 'indexing'",
        )
        .bind(id.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every stored job of the tenant left `indexing` (a crash between storing and indexing, or a failed
    /// status write): called once the tenant's index has been reconciled with Postgres.
    pub async fn finish_indexing_jobs(&self, tenant: TenantId) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE ingest_jobs SET status = 'done', finished_at = now()
             WHERE tenant_id = $1 AND status = 'indexing'",
        )
        .bind(tenant.0)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Marks a job failed with a stable code and a message that names no content; drops the payload.
    pub async fn fail_job(&self, id: JobId, code: &str, message: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE ingest_jobs SET status = 'failed', error_code = $2, error_message = $3, finished_at = now(),
                    payload_sealed = NULL, header_sealed = NULL
             WHERE id = $1",
        )
        .bind(id.0)
        .bind(code)
        .bind(message)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
