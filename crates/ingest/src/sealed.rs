//! Sealed document storage: the only path by which document text reaches or leaves Postgres. Text, names,
//! metadata and heading paths are sealed under the tenant's active content key; names and contents are
//! findable only by keyed hashes; chunks get keyed point ids for the index.

use ragvault_core::{ChunkId, DocumentId, PointId, TenantId};
use ragvault_credentials::{
    CredentialsError, DataKey, DataKeyCache, IndexKey, SealContext, SealPurpose, WrappedKey,
};
use ragvault_store::{
    AuditEntry, ChunkRecord, DataKeyPurpose, NewChunk, NewDocument, ResealedChunk, Store,
    StoreError,
};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("document has {0} chunks, more than can be stored")]
    TooManyChunks(usize),
    #[error("vector index: {0}")]
    Index(#[from] ragvault_search::SearchError),
    #[error("embedding: {0}")]
    Embedding(#[from] ragvault_embedding::EmbeddingError),
    /// The tenant's budget cannot cover a remote embedding request: it was not sent.
    #[error("the tenant's monthly budget is spent")]
    BudgetExceeded { retry_after_secs: u64 },
    /// A remote embedding request could not be metered (its usage row is not durable).
    #[error("metering: {0}")]
    Metering(String),
}

/// A chunk as produced by the pipeline, before sealing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlainChunk {
    pub text: String,
    pub heading_path: Vec<String>,
    pub token_count: u32,
}

/// A document to store, before sealing.
#[derive(Clone, Copy, Debug)]
pub struct DocumentUpload<'a> {
    pub document_id: DocumentId,
    pub name: &'a str,
    pub metadata: Option<&'a serde_json::Value>,
    /// The original bytes (only their keyed hash and size are kept).
    pub content: &'a [u8],
    pub chunks: &'a [PlainChunk],
    /// One embedding per chunk and the model that made them.
    pub vectors: Option<ChunkVectors<'a>>,
    pub tags: &'a [String],
    /// Access groups: empty = the whole tenant may read the document.
    pub groups: &'a [String],
}

/// Embeddings of a document's chunks, in chunk order.
#[derive(Clone, Copy, Debug)]
pub struct ChunkVectors<'a> {
    pub model_id: &'a str,
    pub vectors: &'a [Vec<f32>],
}

/// A chunk's point and its opened vector, for (re)filling the index.
#[derive(Clone, Debug)]
pub struct PointVector {
    pub chunk_id: ChunkId,
    pub point_id: PointId,
    /// `None` when the chunk has no vector from `model`: it must be embedded again.
    pub vector: Option<Vec<f32>>,
}

/// What was stored: ids for the index and the job trail.
#[derive(Clone, Debug)]
pub struct StoredDocument {
    pub document_id: DocumentId,
    /// Chunks written (empty when the document was unchanged).
    pub chunks: Vec<(ChunkId, PointId)>,
    pub replaced: Option<DocumentId>,
    /// Index points of the replaced version.
    pub replaced_points: Vec<PointId>,
    /// The same name and content were already stored: nothing was written, `document_id` is the existing one.
    pub unchanged: bool,
}

/// A chunk read back and opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedChunk {
    pub chunk_id: ChunkId,
    pub document_id: DocumentId,
    pub ordinal: u32,
    pub point_id: PointId,
    pub text: String,
    pub heading_path: Vec<String>,
}

fn document_name_hash(index: &IndexKey, name: &str) -> Vec<u8> {
    index.term_hash(&format!("name\0{name}")).to_vec()
}

/// Metadata (tags and groups included) is part of what makes two uploads "the same".
fn document_content_hash(
    index: &IndexKey,
    content: &[u8],
    metadata: Option<&serde_json::Value>,
) -> Vec<u8> {
    let mut hashed = Vec::with_capacity(content.len() + 64);
    hashed.extend_from_slice(content);
    hashed.push(0);
    if let Some(m) = metadata {
        hashed.extend_from_slice(m.to_string().as_bytes());
    }
    index.content_hash(&hashed).to_vec()
}

/// A document as listed: its name unsealed, never its text.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DocumentSummary {
    pub id: DocumentId,
    pub name: String,
    pub size_bytes: i64,
    pub chunks: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
}

/// Re-encryption progress of one tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ReencryptionProgress {
    pub done: i64,
    pub total: i64,
}

/// The index key id of each tenant, remembered so every search does not read the key table. The index key is
/// never replaced (rotation rewraps it; a new one would rename the partition), so the id can only go stale
/// by the tenant's deletion, which forgets it; the time bound is a backstop.
const INDEX_KEY_ID_TTL: std::time::Duration = std::time::Duration::from_secs(300);

type IndexKeyIds = std::sync::Mutex<HashMap<TenantId, (uuid::Uuid, std::time::Instant)>>;

#[derive(Clone)]
pub struct SealedContent {
    store: Store,
    keys: Arc<DataKeyCache>,
    index_key_ids: Arc<IndexKeyIds>,
}

impl SealedContent {
    pub fn new(store: Store, keys: Arc<DataKeyCache>) -> SealedContent {
        SealedContent {
            store,
            keys,
            index_key_ids: Arc::new(std::sync::Mutex::new(HashMap::new())),
        }
    }

    /// Drops every key of the tenant held in memory: after its KEK is rotated or destroyed.
    pub fn forget_tenant_keys(&self, tenant: TenantId) {
        self.keys.evict_tenant(tenant);
        self.index_key_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&tenant);
    }

    /// The data key cache (evict a tenant's keys when it is deleted).
    pub fn keys(&self) -> &Arc<DataKeyCache> {
        &self.keys
    }

    pub(crate) async fn active_key(
        &self,
        tenant: TenantId,
        purpose: DataKeyPurpose,
    ) -> Result<Arc<DataKey>, ContentError> {
        let remembered = match purpose {
            // Content keys rotate, possibly on another replica: always read which one is active.
            DataKeyPurpose::Content => None,
            DataKeyPurpose::Index => self
                .index_key_ids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&tenant)
                .filter(|(_, at)| at.elapsed() < INDEX_KEY_ID_TTL)
                .map(|(id, _)| *id),
        };
        if let Some(key) = remembered.and_then(|id| self.keys.cached(tenant, id)) {
            return Ok(key);
        }
        let record = self.store.active_data_key(tenant, purpose).await?;
        let key = self
            .keys
            .get(tenant, record.id, &WrappedKey(record.wrapped_key))
            .await?;
        if purpose == DataKeyPurpose::Index {
            self.index_key_ids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(tenant, (record.id, std::time::Instant::now()));
        }
        Ok(key)
    }

    pub(crate) async fn key_by_id(
        &self,
        tenant: TenantId,
        id: uuid::Uuid,
    ) -> Result<Arc<DataKey>, ContentError> {
        if let Some(key) = self.keys.cached(tenant, id) {
            return Ok(key);
        }
        let record = self.store.data_key(tenant, id).await?;
        Ok(self
            .keys
            .get(tenant, id, &WrappedKey(record.wrapped_key))
            .await?)
    }

    /// The tenant's index key (point ids, partition name, keyed hashes).
    pub async fn index_key(&self, tenant: TenantId) -> Result<IndexKey, ContentError> {
        Ok(IndexKey::new(
            self.active_key(tenant, DataKeyPurpose::Index).await?,
        ))
    }

    /// The keyed name and content hashes a document with this name, content and metadata is stored under:
    /// equal hashes mean the same upload, without either side being readable.
    pub async fn upload_hashes(
        &self,
        tenant: TenantId,
        name: &str,
        content: &[u8],
        metadata: Option<&serde_json::Value>,
    ) -> Result<(Vec<u8>, Vec<u8>), ContentError> {
        let index = self.index_key(tenant).await?;
        Ok((
            document_name_hash(&index, name),
            document_content_hash(&index, content, metadata),
        ))
    }

    /// Seals and stores a document with its chunks in one transaction, replacing a live document with the
    /// same name.
    pub async fn put_document(
        &self,
        tenant: TenantId,
        upload: DocumentUpload<'_>,
        actor: &str,
        request_id: Option<String>,
        finishes_job: Option<ragvault_core::JobId>,
    ) -> Result<StoredDocument, ContentError> {
        let DocumentUpload {
            document_id,
            name,
            metadata,
            content,
            chunks,
            vectors,
            tags,
            groups,
        } = upload;
        if let Some(v) = vectors {
            if v.vectors.len() != chunks.len() {
                return Err(ContentError::Embedding(
                    ragvault_embedding::EmbeddingError::Model(format!(
                        "{} vectors for {} chunks",
                        v.vectors.len(),
                        chunks.len()
                    )),
                ));
            }
        }
        let key = self.active_key(tenant, DataKeyPurpose::Content).await?;
        let index = self.index_key(tenant).await?;
        let document_context = |purpose| SealContext {
            purpose,
            tenant,
            document: document_id,
            chunk: None,
            ordinal: 0,
        };
        let metadata_sealed = match metadata {
            Some(m) => Some(key.seal(
                &document_context(SealPurpose::DocumentMetadata),
                m.to_string().as_bytes(),
            )?),
            None => None,
        };
        let mut sealed_chunks = Vec::with_capacity(chunks.len());
        for (ordinal, chunk) in chunks.iter().enumerate() {
            let ordinal =
                u32::try_from(ordinal).map_err(|_| ContentError::TooManyChunks(chunks.len()))?;
            let id = ChunkId::new();
            let context = |purpose| SealContext {
                purpose,
                tenant,
                document: document_id,
                chunk: Some(id),
                ordinal,
            };
            let heading_sealed = if chunk.heading_path.is_empty() {
                None
            } else {
                let heading = json!(chunk.heading_path).to_string();
                Some(key.seal(&context(SealPurpose::HeadingPath), heading.as_bytes())?)
            };
            let vector_sealed = match vectors {
                Some(v) => Some(key.seal(
                    &context(SealPurpose::ChunkVector),
                    &vector_bytes(&v.vectors[ordinal as usize]),
                )?),
                None => None,
            };
            // Keyword postings over the text and its heading path, each term under the index key.
            let (frequencies, term_count) = ragvault_search::keyword::term_frequencies(&format!(
                "{}\n{}",
                chunk.heading_path.join("\n"),
                chunk.text
            ));
            sealed_chunks.push(NewChunk {
                id,
                ordinal: i32::try_from(ordinal)
                    .map_err(|_| ContentError::TooManyChunks(chunks.len()))?,
                point_id: index.point_id(id),
                text_sealed: key.seal(&context(SealPurpose::ChunkText), chunk.text.as_bytes())?,
                heading_sealed,
                token_count: i32::try_from(chunk.token_count).unwrap_or(i32::MAX),
                vector_sealed,
                embedding_model: vectors.map(|v| v.model_id.to_owned()),
                term_count,
                postings: frequencies
                    .iter()
                    .map(|(term, n)| (index.term_hash(term).to_vec(), *n))
                    .collect(),
            });
        }
        let document = NewDocument {
            id: document_id,
            tenant_id: tenant,
            name_hash: document_name_hash(&index, name),
            content_hash: document_content_hash(&index, content, metadata),
            data_key_id: key.id(),
            name_sealed: key.seal(
                &document_context(SealPurpose::DocumentName),
                name.as_bytes(),
            )?,
            metadata_sealed,
            size_bytes: i64::try_from(content.len()).unwrap_or(i64::MAX),
            tag_hashes: tags.iter().map(|t| tag_hash(&index, t)).collect(),
            group_hashes: groups.iter().map(|g| group_hash(&index, g)).collect(),
        };
        let audit = AuditEntry::new(actor, "document.stored")
            .tenant(tenant)
            .target(format!("document:{document_id}"))
            .request_id(request_id)
            .details(json!({ "chunks": sealed_chunks.len(), "size_bytes": document.size_bytes }));
        let outcome = self
            .store
            .put_document(&document, &sealed_chunks, &audit, finishes_job)
            .await?;
        Ok(match outcome {
            ragvault_store::PutOutcome::Stored {
                replaced,
                replaced_points,
            } => StoredDocument {
                document_id,
                chunks: sealed_chunks.iter().map(|c| (c.id, c.point_id)).collect(),
                replaced,
                replaced_points,
                unchanged: false,
            },
            ragvault_store::PutOutcome::Unchanged { existing } => StoredDocument {
                document_id: existing,
                chunks: Vec::new(),
                replaced: None,
                replaced_points: Vec::new(),
                unchanged: true,
            },
        })
    }

    /// Opens one stored chunk. An integrity failure is audited and returned; no partial text escapes.
    async fn open_chunk(
        &self,
        tenant: TenantId,
        record: &ChunkRecord,
    ) -> Result<OpenedChunk, ContentError> {
        let key = self.key_by_id(tenant, record.data_key_id).await?;
        let ordinal = u32::try_from(record.ordinal).unwrap_or(u32::MAX);
        let context = |purpose| SealContext {
            purpose,
            tenant,
            document: record.document_id,
            chunk: Some(record.id),
            ordinal,
        };
        let opened = (|| {
            let text = key.open(&context(SealPurpose::ChunkText), &record.text_sealed)?;
            let heading = match &record.heading_sealed {
                Some(sealed) => Some(key.open(&context(SealPurpose::HeadingPath), sealed)?),
                None => None,
            };
            Ok::<_, CredentialsError>((text, heading))
        })();
        let (text, heading) = match opened {
            Ok(parts) => parts,
            Err(e) => {
                self.audit_integrity_failure(tenant, record.id, &e).await;
                return Err(e.into());
            }
        };
        let heading_path = heading
            .and_then(|h| serde_json::from_slice::<Vec<String>>(&h).ok())
            .unwrap_or_default();
        Ok(OpenedChunk {
            chunk_id: record.id,
            document_id: record.document_id,
            ordinal,
            point_id: record.point_id,
            text: String::from_utf8_lossy(&text).into_owned(),
            heading_path,
        })
    }

    async fn audit_integrity_failure(
        &self,
        tenant: TenantId,
        chunk: ChunkId,
        error: &CredentialsError,
    ) {
        tracing::error!(%tenant, %chunk, %error, "sealed chunk failed to open");
        let entry = AuditEntry::new("system:content", "content.integrity_failure")
            .tenant(tenant)
            .target(format!("chunk:{chunk}"))
            .details(json!({ "error": error.to_string() }));
        if let Err(e) = self.store.append_audit(&entry).await {
            tracing::error!(error = %e, "could not audit an integrity failure");
        }
    }

    /// The vectors behind index points, opened, for refilling the index. A chunk whose vector is missing or
    /// from another model comes back with `vector: None`.
    pub async fn point_vectors(
        &self,
        tenant: TenantId,
        points: &[PointId],
        model: &str,
    ) -> Result<Vec<PointVector>, ContentError> {
        let records = self.store.chunks_by_points(tenant, points).await?;
        let mut out = Vec::with_capacity(records.len());
        for record in &records {
            let vector = match (&record.vector_sealed, record.embedding_model.as_deref()) {
                (Some(sealed), Some(m)) if m == model => {
                    let key = self.key_by_id(tenant, record.data_key_id).await?;
                    let context = SealContext {
                        purpose: SealPurpose::ChunkVector,
                        tenant,
                        document: record.document_id,
                        chunk: Some(record.id),
                        ordinal: u32::try_from(record.ordinal).unwrap_or(u32::MAX),
                    };
                    match key.open(&context, sealed) {
                        Ok(bytes) => Some(vector_from_bytes(&bytes)),
                        Err(e) => {
                            self.audit_integrity_failure(tenant, record.id, &e).await;
                            return Err(e.into());
                        }
                    }
                }
                _ => None,
            };
            out.push(PointVector {
                chunk_id: record.id,
                point_id: record.point_id,
                vector,
            });
        }
        Ok(out)
    }

    /// Seals re-made embeddings of stored chunks (after a model switch or for chunks stored without one).
    pub async fn store_vectors(
        &self,
        tenant: TenantId,
        model: &str,
        vectors: &[(PointId, Vec<f32>)],
    ) -> Result<u64, ContentError> {
        let points: Vec<PointId> = vectors.iter().map(|(p, _)| *p).collect();
        let records = self.store.chunks_by_points(tenant, &points).await?;
        let mut sealed = Vec::with_capacity(records.len());
        for (point, vector) in vectors {
            let Some(record) = records.iter().find(|r| r.point_id == *point) else {
                continue;
            };
            let key = self.key_by_id(tenant, record.data_key_id).await?;
            let context = SealContext {
                purpose: SealPurpose::ChunkVector,
                tenant,
                document: record.document_id,
                chunk: Some(record.id),
                ordinal: u32::try_from(record.ordinal).unwrap_or(u32::MAX),
            };
            sealed.push(ragvault_store::ChunkVector {
                chunk_id: record.id,
                data_key_id: record.data_key_id,
                vector_sealed: key.seal(&context, &vector_bytes(vector))?,
                embedding_model: model.to_owned(),
            });
        }
        Ok(self.store.store_chunk_vectors(tenant, &sealed).await?)
    }

    /// Opens the chunks behind index points, in the order of `points` (unknown points are skipped).
    pub async fn open_points(
        &self,
        tenant: TenantId,
        points: &[PointId],
    ) -> Result<Vec<OpenedChunk>, ContentError> {
        let records = self.store.chunks_by_points(tenant, points).await?;
        let mut opened = Vec::with_capacity(records.len());
        for point in points {
            if let Some(record) = records.iter().find(|r| r.point_id == *point) {
                opened.push(self.open_chunk(tenant, record).await?);
            }
        }
        Ok(opened)
    }

    pub async fn open_document(
        &self,
        tenant: TenantId,
        document: DocumentId,
    ) -> Result<(String, Vec<OpenedChunk>), ContentError> {
        let record = self.store.get_document(tenant, document).await?;
        let key = self.key_by_id(tenant, record.data_key_id).await?;
        let context = SealContext {
            purpose: SealPurpose::DocumentName,
            tenant,
            document,
            chunk: None,
            ordinal: 0,
        };
        let name = key.open(&context, &record.name_sealed)?;
        let mut chunks = Vec::new();
        for chunk in self.store.document_chunks(tenant, document).await? {
            chunks.push(self.open_chunk(tenant, &chunk).await?);
        }
        Ok((String::from_utf8_lossy(&name).into_owned(), chunks))
    }

    /// The live documents of a tenant with their names unsealed.
    pub async fn list_documents(
        &self,
        tenant: TenantId,
    ) -> Result<Vec<DocumentSummary>, ContentError> {
        let mut out = Vec::new();
        for record in self.store.list_documents(tenant).await? {
            out.push(self.summary(tenant, record).await?);
        }
        Ok(out)
    }

    /// Summaries of the documents among `ids`, in one store round trip (a chunk's document is always active:
    /// replacing a document deletes its chunks).
    pub async fn document_summaries(
        &self,
        tenant: TenantId,
        ids: &[DocumentId],
    ) -> Result<Vec<DocumentSummary>, ContentError> {
        let mut summaries = Vec::with_capacity(ids.len());
        for record in self.store.documents_by_ids(tenant, ids).await? {
            summaries.push(self.summary(tenant, record).await?);
        }
        Ok(summaries)
    }

    pub async fn document_summary(
        &self,
        tenant: TenantId,
        id: DocumentId,
    ) -> Result<DocumentSummary, ContentError> {
        let record = self.store.get_document(tenant, id).await?;
        self.summary(tenant, record).await
    }

    async fn summary(
        &self,
        tenant: TenantId,
        record: ragvault_store::DocumentRecord,
    ) -> Result<DocumentSummary, ContentError> {
        let key = self.key_by_id(tenant, record.data_key_id).await?;
        let context = SealContext {
            purpose: SealPurpose::DocumentName,
            tenant,
            document: record.id,
            chunk: None,
            ordinal: 0,
        };
        let name = key.open(&context, &record.name_sealed)?;
        Ok(DocumentSummary {
            id: record.id,
            name: String::from_utf8_lossy(&name).into_owned(),
            size_bytes: record.size_bytes,
            chunks: record.chunk_count,
            created_at: record.created_at,
        })
    }

    pub async fn reencryption_progress(
        &self,
        tenant: TenantId,
    ) -> Result<ReencryptionProgress, ContentError> {
        let current = self
            .store
            .active_data_key(tenant, DataKeyPurpose::Content)
            .await?;
        let (done, total) = self.store.reencryption_progress(tenant, current.id).await?;
        Ok(ReencryptionProgress { done, total })
    }

    /// Re-encrypts up to `max_batches` batches of chunks still sealed under older content keys (all of
    /// them with `None`). Each batch commits on its own, so a job killed midway resumes where it stopped,
    /// and every chunk is readable at every moment (each row names its key).
    pub async fn reencrypt(
        &self,
        tenant: TenantId,
        batch_size: i64,
        max_batches: Option<usize>,
    ) -> Result<ReencryptionProgress, ContentError> {
        let current = self.active_key(tenant, DataKeyPurpose::Content).await?;
        let mut batches = 0;
        loop {
            if max_batches.is_some_and(|max| batches >= max) {
                break;
            }
            let records = self
                .store
                .chunks_not_under_key(tenant, current.id(), batch_size)
                .await?;
            if records.is_empty() {
                break;
            }
            let mut resealed = Vec::with_capacity(records.len());
            for record in &records {
                let opened = self.open_chunk(tenant, record).await?;
                let context = |purpose| SealContext {
                    purpose,
                    tenant,
                    document: record.document_id,
                    chunk: Some(record.id),
                    ordinal: opened.ordinal,
                };
                let heading_sealed = if opened.heading_path.is_empty() {
                    None
                } else {
                    let heading = json!(opened.heading_path).to_string();
                    Some(current.seal(&context(SealPurpose::HeadingPath), heading.as_bytes())?)
                };
                let vector_sealed = match &record.vector_sealed {
                    Some(sealed) => {
                        let old = self.key_by_id(tenant, record.data_key_id).await?;
                        let plain = old.open(&context(SealPurpose::ChunkVector), sealed)?;
                        Some(current.seal(&context(SealPurpose::ChunkVector), &plain)?)
                    }
                    None => None,
                };
                resealed.push((
                    record.data_key_id,
                    ResealedChunk {
                        id: record.id,
                        data_key_id: current.id(),
                        text_sealed: current
                            .seal(&context(SealPurpose::ChunkText), opened.text.as_bytes())?,
                        heading_sealed,
                        vector_sealed,
                    },
                ));
            }
            self.store.store_resealed_chunks(tenant, &resealed).await?;
            batches += 1;
        }
        self.reencryption_progress(tenant).await
    }
}

/// The keyed hash a tag is stored and filtered by.
pub fn tag_hash(index: &IndexKey, tag: &str) -> Vec<u8> {
    index
        .term_hash(&format!("tag\0{}", tag.trim().to_lowercase()))
        .to_vec()
}

/// The keyed hash of an access group name (case and surrounding space do not matter).
pub fn group_hash(index: &IndexKey, group: &str) -> Vec<u8> {
    index
        .term_hash(&format!("group\0{}", group.trim().to_lowercase()))
        .to_vec()
}

fn vector_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn vector_from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
