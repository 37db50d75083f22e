//! Sealed documents and chunks. This module moves bytes it cannot read: every text field arrives sealed.

use crate::audit::{self, AuditEntry};
use crate::{Store, StoreError};
use ragvault_core::{ChunkId, DocumentId, PointId, TenantId};
use sqlx::postgres::PgRow;
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Clone, Debug)]
pub struct NewDocument {
    pub id: DocumentId,
    pub tenant_id: TenantId,
    pub name_hash: Vec<u8>,
    pub content_hash: Vec<u8>,
    pub data_key_id: Uuid,
    pub name_sealed: Vec<u8>,
    pub metadata_sealed: Option<Vec<u8>>,
    pub size_bytes: i64,
    /// Keyed hashes of the document's tags.
    pub tag_hashes: Vec<Vec<u8>>,
    /// Keyed hashes of the document's access groups; empty = the whole tenant may read it.
    pub group_hashes: Vec<Vec<u8>>,
}

/// What storing a document did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Stored {
        replaced: Option<DocumentId>,
        /// Index points of the replaced version, to remove from the index.
        replaced_points: Vec<PointId>,
    },
    /// The same name with the same content (keyed hash) is already stored; nothing was written.
    Unchanged { existing: DocumentId },
}

#[derive(Clone, Debug)]
pub struct NewChunk {
    pub id: ChunkId,
    pub ordinal: i32,
    pub point_id: PointId,
    pub text_sealed: Vec<u8>,
    pub heading_sealed: Option<Vec<u8>>,
    pub token_count: i32,
    pub vector_sealed: Option<Vec<u8>>,
    pub embedding_model: Option<String>,
    /// Keyword terms in the chunk (BM25 length) and its postings: (keyed term hash, frequency).
    pub term_count: i32,
    pub postings: Vec<(Vec<u8>, i32)>,
}

#[derive(Clone, Debug)]
pub struct DocumentRecord {
    pub id: DocumentId,
    pub tenant_id: TenantId,
    pub data_key_id: Uuid,
    pub name_sealed: Vec<u8>,
    pub metadata_sealed: Option<Vec<u8>>,
    pub size_bytes: i64,
    pub chunk_count: i32,
    pub created_at: OffsetDateTime,
}

#[derive(Clone, Debug)]
pub struct ChunkRecord {
    pub id: ChunkId,
    pub document_id: DocumentId,
    pub ordinal: i32,
    pub point_id: PointId,
    pub data_key_id: Uuid,
    pub text_sealed: Vec<u8>,
    pub heading_sealed: Option<Vec<u8>>,
    pub token_count: i32,
    pub vector_sealed: Option<Vec<u8>>,
    pub embedding_model: Option<String>,
}

/// A chunk after re-encryption under another data key.
#[derive(Clone, Debug)]
pub struct ResealedChunk {
    pub id: ChunkId,
    pub data_key_id: Uuid,
    pub text_sealed: Vec<u8>,
    pub heading_sealed: Option<Vec<u8>>,
    pub vector_sealed: Option<Vec<u8>>,
}

pub(crate) const DOCUMENT_COLUMNS: &str =
    "id, tenant_id, data_key_id, name_sealed, metadata_sealed, size_bytes, chunk_count, created_at";
const CHUNK_COLUMNS: &str =
    "id, document_id, ordinal, point_id, data_key_id, text_sealed, heading_sealed, token_count, vector_sealed,
     embedding_model";

pub(crate) fn document_from_row(row: &PgRow) -> Result<DocumentRecord, StoreError> {
    Ok(DocumentRecord {
        id: DocumentId(row.try_get("id")?),
        tenant_id: TenantId(row.try_get("tenant_id")?),
        data_key_id: row.try_get("data_key_id")?,
        name_sealed: row.try_get("name_sealed")?,
        metadata_sealed: row.try_get("metadata_sealed")?,
        size_bytes: row.try_get("size_bytes")?,
        chunk_count: row.try_get("chunk_count")?,
        created_at: row.try_get("created_at")?,
    })
}

fn chunk_from_row(row: &PgRow) -> Result<ChunkRecord, StoreError> {
    Ok(ChunkRecord {
        id: ChunkId(row.try_get("id")?),
        document_id: DocumentId(row.try_get("document_id")?),
        ordinal: row.try_get("ordinal")?,
        point_id: PointId(row.try_get::<i64, _>("point_id")? as u64),
        data_key_id: row.try_get("data_key_id")?,
        text_sealed: row.try_get("text_sealed")?,
        heading_sealed: row.try_get("heading_sealed")?,
        token_count: row.try_get("token_count")?,
        vector_sealed: row.try_get("vector_sealed")?,
        embedding_model: row.try_get("embedding_model")?,
    })
}

/// Inserts chunks, their keyword postings and the document's tags with one statement each (UNNEST), not a
/// round trip per row.
async fn insert_chunks(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    document: &NewDocument,
    chunks: &[NewChunk],
) -> Result<(), StoreError> {
    let ids: Vec<Uuid> = chunks.iter().map(|c| c.id.0).collect();
    let ordinals: Vec<i32> = chunks.iter().map(|c| c.ordinal).collect();
    let points: Vec<i64> = chunks.iter().map(|c| c.point_id.0 as i64).collect();
    let texts: Vec<&[u8]> = chunks.iter().map(|c| c.text_sealed.as_slice()).collect();
    let headings: Vec<Option<&[u8]>> = chunks.iter().map(|c| c.heading_sealed.as_deref()).collect();
    let tokens: Vec<i32> = chunks.iter().map(|c| c.token_count).collect();
    let vectors: Vec<Option<&[u8]>> = chunks.iter().map(|c| c.vector_sealed.as_deref()).collect();
    let models: Vec<Option<&str>> = chunks
        .iter()
        .map(|c| c.embedding_model.as_deref())
        .collect();
    let term_counts: Vec<i32> = chunks.iter().map(|c| c.term_count).collect();
    sqlx::query(
        "INSERT INTO chunks (id, tenant_id, document_id, data_key_id, ordinal, point_id, text_sealed,
                             heading_sealed, token_count, vector_sealed, embedding_model, term_count)
         SELECT u.id, $1, $2, $3, u.ordinal, u.point_id, u.text_sealed, u.heading_sealed, u.token_count,
                u.vector_sealed, u.embedding_model, u.term_count
         FROM UNNEST($4::uuid[], $5::int[], $6::bigint[], $7::bytea[], $8::bytea[], $9::int[], $10::bytea[],
                     $11::text[], $12::int[])
              AS u(id, ordinal, point_id, text_sealed, heading_sealed, token_count, vector_sealed,
                   embedding_model, term_count)",
    )
    .bind(document.tenant_id.0)
    .bind(document.id.0)
    .bind(document.data_key_id)
    .bind(&ids)
    .bind(&ordinals)
    .bind(&points)
    .bind(&texts)
    .bind(&headings)
    .bind(&tokens)
    .bind(&vectors)
    .bind(&models)
    .bind(&term_counts)
    .execute(&mut **tx)
    .await?;
    let (mut chunk_ids, mut hashes, mut frequencies) = (Vec::new(), Vec::new(), Vec::new());
    for chunk in chunks {
        for (hash, frequency) in &chunk.postings {
            chunk_ids.push(chunk.id.0);
            hashes.push(hash.as_slice());
            frequencies.push(*frequency);
        }
    }
    if !chunk_ids.is_empty() {
        sqlx::query(
            "INSERT INTO keyword_postings (tenant_id, chunk_id, term_hash, term_frequency)
             SELECT $1, u.chunk_id, u.term_hash, u.term_frequency
             FROM UNNEST($2::uuid[], $3::bytea[], $4::int[]) AS u(chunk_id, term_hash, term_frequency)",
        )
        .bind(document.tenant_id.0)
        .bind(&chunk_ids)
        .bind(&hashes)
        .bind(&frequencies)
        .execute(&mut **tx)
        .await?;
    }
    if !document.tag_hashes.is_empty() {
        sqlx::query(
            "INSERT INTO document_tags (tenant_id, document_id, tag_hash)
             SELECT $1, $2, t FROM UNNEST($3::bytea[]) AS t ON CONFLICT DO NOTHING",
        )
        .bind(document.tenant_id.0)
        .bind(document.id.0)
        .bind(&document.tag_hashes)
        .execute(&mut **tx)
        .await?;
    }
    if !document.group_hashes.is_empty() {
        sqlx::query(
            "INSERT INTO document_groups (tenant_id, document_id, group_hash)
             SELECT $1, $2, g FROM UNNEST($3::bytea[]) AS g ON CONFLICT DO NOTHING",
        )
        .bind(document.tenant_id.0)
        .bind(document.id.0)
        .bind(&document.group_hashes)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl Store {
    /// Stores a document and all its chunks in one transaction. A live document with the same name is
    /// marked replaced (and its chunks deleted) in the same transaction, so readers see the old version or
    /// the new one, never a mix. Returns the id of the replaced document, if any.
    pub async fn put_document(
        &self,
        document: &NewDocument,
        chunks: &[NewChunk],
        audit_entry: &AuditEntry,
        finishes_job: Option<ragvault_core::JobId>,
    ) -> Result<PutOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        // A job whose document is already stored (a crash after commit) must not store it twice.
        if let Some(job) = finishes_job {
            let finished: Option<String> =
                sqlx::query_scalar("SELECT status FROM ingest_jobs WHERE id = $1 FOR UPDATE")
                    .bind(job.0)
                    .fetch_optional(&mut *tx)
                    .await?;
            if matches!(finished.as_deref(), Some("done" | "indexing")) {
                // Another run of the same job stored it already: nothing is written, and the caller must
                // not index the chunk ids it made for this run.
                return Ok(PutOutcome::Unchanged {
                    existing: document.id,
                });
            }
        }
        // Re-upload of identical content (by keyed hash) under the same name: keep what is stored.
        let existing: Option<(Uuid, i32)> = sqlx::query_as(
            "SELECT id, chunk_count FROM documents
             WHERE tenant_id = $1 AND name_hash = $2 AND content_hash = $3 AND status = 'active'",
        )
        .bind(document.tenant_id.0)
        .bind(&document.name_hash)
        .bind(&document.content_hash)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((existing, chunk_count)) = existing {
            if let Some(job) = finishes_job {
                sqlx::query(
                    "UPDATE ingest_jobs SET status = 'done', chunks = $2, document_id = $3, finished_at = now(),
                            payload_sealed = NULL, header_sealed = NULL
                     WHERE id = $1",
                )
                .bind(job.0)
                .bind(chunk_count)
                .bind(existing)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            return Ok(PutOutcome::Unchanged {
                existing: DocumentId(existing),
            });
        }
        let replaced: Option<Uuid> = sqlx::query_scalar(
            "UPDATE documents SET status = 'replaced'
             WHERE tenant_id = $1 AND name_hash = $2 AND status = 'active' RETURNING id",
        )
        .bind(document.tenant_id.0)
        .bind(&document.name_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let mut replaced_points = Vec::new();
        if let Some(old) = replaced {
            let points: Vec<i64> =
                sqlx::query_scalar("DELETE FROM chunks WHERE document_id = $1 RETURNING point_id")
                    .bind(old)
                    .fetch_all(&mut *tx)
                    .await?;
            replaced_points = points.into_iter().map(|p| PointId(p as u64)).collect();
        }
        sqlx::query(
            "INSERT INTO documents (id, tenant_id, name_hash, content_hash, data_key_id, name_sealed,
                                    metadata_sealed, size_bytes, chunk_count)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(document.id.0)
        .bind(document.tenant_id.0)
        .bind(&document.name_hash)
        .bind(&document.content_hash)
        .bind(document.data_key_id)
        .bind(&document.name_sealed)
        .bind(&document.metadata_sealed)
        .bind(document.size_bytes)
        .bind(i32::try_from(chunks.len()).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?;
        insert_chunks(&mut tx, document, chunks).await?;
        audit::insert(&mut tx, audit_entry).await?;
        if let Some(job) = finishes_job {
            // The job leaves the queue in the same transaction that stores its document: no orphan chunks,
            // no stored document whose job could run again. It is `done` (searchable) once its points are in
            // the index: `finish_indexed_job`.
            sqlx::query(
                "UPDATE ingest_jobs SET status = 'indexing', chunks = $2,
                        payload_sealed = NULL, header_sealed = NULL
                 WHERE id = $1",
            )
            .bind(job.0)
            .bind(i32::try_from(chunks.len()).unwrap_or(i32::MAX))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(PutOutcome::Stored {
            replaced: replaced.map(DocumentId),
            replaced_points,
        })
    }

    pub async fn list_documents(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<DocumentRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE tenant_id = $1 AND status = 'active'
             ORDER BY created_at, id"
        ))
        .bind(tenant.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(document_from_row).collect()
    }

    /// Active documents of `tenant` created before `cutoff`, oldest first, at most `limit` (retention).
    pub async fn documents_created_before(
        &self,
        tenant: TenantId,
        cutoff: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<DocumentId>, StoreError> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM documents WHERE tenant_id = $1 AND status = 'active' AND created_at < $2
             ORDER BY created_at, id LIMIT $3",
        )
        .bind(tenant.0)
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(DocumentId).collect())
    }

    pub async fn get_document(
        &self,
        tenant: TenantId,
        id: DocumentId,
    ) -> Result<DocumentRecord, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE tenant_id = $1 AND id = $2 AND status = 'active'"
        ))
        .bind(tenant.0)
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("document"))?;
        document_from_row(&row)
    }

    /// The chunks behind index points, for one tenant only.
    pub async fn chunks_by_points(
        &self,
        tenant: TenantId,
        points: &[PointId],
    ) -> Result<Vec<ChunkRecord>, StoreError> {
        let ids: Vec<i64> = points.iter().map(|p| p.0 as i64).collect();
        let rows = sqlx::query(&format!(
            "SELECT {CHUNK_COLUMNS} FROM chunks WHERE tenant_id = $1 AND point_id = ANY($2)"
        ))
        .bind(tenant.0)
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(chunk_from_row).collect()
    }

    pub async fn document_chunks(
        &self,
        tenant: TenantId,
        document: DocumentId,
    ) -> Result<Vec<ChunkRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {CHUNK_COLUMNS} FROM chunks WHERE tenant_id = $1 AND document_id = $2 ORDER BY ordinal"
        ))
        .bind(tenant.0)
        .bind(document.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(chunk_from_row).collect()
    }

    /// Up to `limit` chunks of the tenant sealed under any key other than `current_key`.
    pub async fn chunks_not_under_key(
        &self,
        tenant: TenantId,
        current_key: Uuid,
        limit: i64,
    ) -> Result<Vec<ChunkRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {CHUNK_COLUMNS} FROM chunks WHERE tenant_id = $1 AND data_key_id <> $2
             ORDER BY id LIMIT $3"
        ))
        .bind(tenant.0)
        .bind(current_key)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(chunk_from_row).collect()
    }

    /// (chunks under `current_key`, all chunks) of a tenant: re-encryption progress.
    pub async fn reencryption_progress(
        &self,
        tenant: TenantId,
        current_key: Uuid,
    ) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(
            "SELECT count(*) FILTER (WHERE data_key_id = $2) AS done, count(*) AS total
             FROM chunks WHERE tenant_id = $1",
        )
        .bind(tenant.0)
        .bind(current_key)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("done")?, row.try_get("total")?))
    }

    /// Writes a batch of re-encrypted chunks in one transaction. A chunk that changed meanwhile (its key
    /// is no longer `old_key`) is left alone, so a concurrent re-upload is never overwritten.
    pub async fn store_resealed_chunks(
        &self,
        tenant: TenantId,
        resealed: &[(Uuid, ResealedChunk)],
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut written = 0;
        for (old_key, chunk) in resealed {
            written += sqlx::query(
                "UPDATE chunks SET data_key_id = $4, text_sealed = $5, heading_sealed = $6, vector_sealed = $7
                 WHERE tenant_id = $1 AND id = $2 AND data_key_id = $3",
            )
            .bind(tenant.0)
            .bind(chunk.id.0)
            .bind(old_key)
            .bind(chunk.data_key_id)
            .bind(&chunk.text_sealed)
            .bind(&chunk.heading_sealed)
            .bind(&chunk.vector_sealed)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(written)
    }

    /// The wrapped form of a data key of this tenant, by id (any state).
    pub async fn data_key(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<crate::DataKeyRecord, StoreError> {
        self.list_data_keys(tenant)
            .await?
            .into_iter()
            .find(|k| k.id == id)
            .ok_or(StoreError::NotFound("data key"))
    }
}

impl Store {
    /// Deletes a document and its chunks; returns the point ids that must leave the index.
    pub async fn delete_document(
        &self,
        tenant: TenantId,
        id: DocumentId,
        audit_entry: &AuditEntry,
    ) -> Result<Vec<PointId>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let points: Vec<i64> = sqlx::query_scalar(
            "SELECT point_id FROM chunks WHERE tenant_id = $1 AND document_id = $2",
        )
        .bind(tenant.0)
        .bind(id.0)
        .fetch_all(&mut *tx)
        .await?;
        let deleted = sqlx::query(
            "DELETE FROM documents WHERE tenant_id = $1 AND id = $2 AND status = 'active'",
        )
        .bind(tenant.0)
        .bind(id.0)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound("document"));
        }
        audit::insert(&mut tx, audit_entry).await?;
        tx.commit().await?;
        Ok(points.into_iter().map(|p| PointId(p as u64)).collect())
    }
}
