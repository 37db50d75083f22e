//! Reads for retrieval: the point list the index is reconciled against, the blind keyword index (BM25
//! over keyed term hashes) and the point sets behind document and tag filters.

use crate::documents::{DocumentRecord, DOCUMENT_COLUMNS};
use crate::{Store, StoreError};
use ragvault_core::{ChunkId, DocumentId, PointId, TenantId};
use sqlx::Row;
use uuid::Uuid;

/// BM25 parameters (the usual defaults).
const BM25_K1: f64 = 1.2;
const BM25_B: f64 = 0.75;

/// A chunk's vector sealed again after re-embedding, keyed by the data key it was sealed under.
#[derive(Clone, Debug)]
pub struct ChunkVector {
    pub chunk_id: ChunkId,
    pub data_key_id: Uuid,
    pub vector_sealed: Vec<u8>,
    pub embedding_model: String,
}

impl Store {
    /// Every index point of a tenant's live chunks.
    pub async fn tenant_points(&self, tenant: TenantId) -> Result<Vec<PointId>, StoreError> {
        let points: Vec<i64> =
            sqlx::query_scalar("SELECT point_id FROM chunks WHERE tenant_id = $1")
                .bind(tenant.0)
                .fetch_all(&self.pool)
                .await?;
        Ok(points.into_iter().map(|p| PointId(p as u64)).collect())
    }

    /// The `k` best chunks for a set of keyed term hashes by BM25, optionally only among `allow`.
    /// Scores use the tenant's own collection statistics (chunk count, mean length, document frequency).
    pub async fn keyword_search(
        &self,
        tenant: TenantId,
        term_hashes: &[Vec<u8>],
        k: i64,
        allow: Option<&[PointId]>,
        deny: Option<&[PointId]>,
    ) -> Result<Vec<(PointId, f64)>, StoreError> {
        if term_hashes.is_empty() || k <= 0 {
            return Ok(Vec::new());
        }
        let allow: Option<Vec<i64>> = allow.map(|a| a.iter().map(|p| p.0 as i64).collect());
        let deny: Option<Vec<i64>> = deny.map(|d| d.iter().map(|p| p.0 as i64).collect());
        let rows = sqlx::query(
            "WITH stats AS (
                 SELECT count(*)::float8 AS n, greatest(avg(term_count), 1)::float8 AS avgdl
                 FROM chunks WHERE tenant_id = $1
             ),
             df AS (
                 SELECT term_hash, count(*)::float8 AS df FROM keyword_postings
                 WHERE tenant_id = $1 AND term_hash = ANY($2) GROUP BY term_hash
             )
             SELECT c.point_id,
                    sum(ln(1 + (stats.n - df.df + 0.5) / (df.df + 0.5))
                        * p.term_frequency * ($4 + 1)
                        / (p.term_frequency + $4 * (1 - $5 + $5 * c.term_count / stats.avgdl))) AS score
             FROM keyword_postings p
             JOIN df ON df.term_hash = p.term_hash
             JOIN chunks c ON c.id = p.chunk_id
             CROSS JOIN stats
             WHERE p.tenant_id = $1 AND ($6::bigint[] IS NULL OR c.point_id = ANY($6))
               AND ($7::bigint[] IS NULL OR NOT (c.point_id = ANY($7)))
             GROUP BY c.point_id
             ORDER BY score DESC, c.point_id
             LIMIT $3",
        )
        .bind(tenant.0)
        .bind(term_hashes)
        .bind(k)
        .bind(BM25_K1)
        .bind(BM25_B)
        .bind(allow)
        .bind(deny)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    PointId(row.try_get::<i64, _>("point_id")? as u64),
                    row.try_get::<f64, _>("score")?,
                ))
            })
            .collect()
    }

    /// The points of a tenant's live documents that pass the filters: in `documents` (when given) and
    /// carrying every tag in `tag_hashes`.
    pub async fn filtered_points(
        &self,
        tenant: TenantId,
        documents: Option<&[DocumentId]>,
        tag_hashes: &[Vec<u8>],
    ) -> Result<Vec<PointId>, StoreError> {
        let documents: Option<Vec<Uuid>> = documents.map(|d| d.iter().map(|d| d.0).collect());
        let points: Vec<i64> = sqlx::query_scalar(
            "SELECT c.point_id FROM chunks c
             WHERE c.tenant_id = $1
               AND ($2::uuid[] IS NULL OR c.document_id = ANY($2))
               AND (cardinality($3::bytea[]) = 0 OR (
                   SELECT count(DISTINCT t.tag_hash) FROM document_tags t
                   WHERE t.document_id = c.document_id AND t.tag_hash = ANY($3)
               ) = cardinality($3::bytea[]))",
        )
        .bind(tenant.0)
        .bind(documents)
        .bind(tag_hashes)
        .fetch_all(&self.pool)
        .await?;
        Ok(points.into_iter().map(|p| PointId(p as u64)).collect())
    }

    /// Points of documents restricted to access groups none of which is in `group_hashes`: what a
    /// principal holding only those groups must never retrieve.
    pub async fn denied_points(
        &self,
        tenant: TenantId,
        group_hashes: &[Vec<u8>],
    ) -> Result<Vec<PointId>, StoreError> {
        let points: Vec<i64> = sqlx::query_scalar(
            "SELECT c.point_id FROM chunks c
             WHERE c.tenant_id = $1
               AND EXISTS (SELECT 1 FROM document_groups g WHERE g.document_id = c.document_id)
               AND NOT EXISTS (SELECT 1 FROM document_groups g
                               WHERE g.document_id = c.document_id AND g.group_hash = ANY($2))",
        )
        .bind(tenant.0)
        .bind(group_hashes)
        .fetch_all(&self.pool)
        .await?;
        Ok(points.into_iter().map(|p| PointId(p as u64)).collect())
    }

    /// Documents of a tenant by id (any that exist).
    pub async fn documents_by_ids(
        &self,
        tenant: TenantId,
        ids: &[DocumentId],
    ) -> Result<Vec<DocumentRecord>, StoreError> {
        let ids: Vec<Uuid> = ids.iter().map(|d| d.0).collect();
        let rows = sqlx::query(&format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents WHERE tenant_id = $1 AND id = ANY($2)"
        ))
        .bind(tenant.0)
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(crate::documents::document_from_row)
            .collect()
    }

    /// Stores re-embedded vectors. A chunk re-encrypted meanwhile (other key) is skipped: the next
    /// reconciliation embeds it again.
    pub async fn store_chunk_vectors(
        &self,
        tenant: TenantId,
        vectors: &[ChunkVector],
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut written = 0;
        for v in vectors {
            written += sqlx::query(
                "UPDATE chunks SET vector_sealed = $4, embedding_model = $5
                 WHERE tenant_id = $1 AND id = $2 AND data_key_id = $3",
            )
            .bind(tenant.0)
            .bind(v.chunk_id.0)
            .bind(v.data_key_id)
            .bind(&v.vector_sealed)
            .bind(&v.embedding_model)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(written)
    }
}
