//! The ingest pipeline: an upload is sealed into a job row (202 + job id), a bounded queue feeds a pool of
//! workers, and each worker parses, scans for secrets, chunks, seals and stores the document, finishing
//! the job in the same transaction. Jobs left unfinished by a crash are picked up again at start.

use crate::chunk::{chunk_document, ChunkingConfig};
use crate::indexing::{embedding_text, Indexer};
use crate::queue::FairQueue;
use crate::sealed::{ChunkVectors, ContentError, DocumentUpload, SealedContent};
use crate::secrets::{self, SecretPolicy};
use crate::{HtmlParser, IngestError, MarkdownParser, Parser, PdfParser, PlainTextParser};
use ragvault_core::{DocumentId, JobId, TenantId};
use ragvault_credentials::{SealContext, SealPurpose};
use ragvault_embedding::TokenCount;
use ragvault_store::{DataKeyPurpose, JobRecord, NewJob, Store, UploadMatch};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Wait before a job whose claim failed (Postgres away) is tried again.
const CLAIM_RETRY: Duration = Duration::from_secs(1);

/// Document formats this build parses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    PlainText,
    Markdown,
    Html,
    Pdf,
    /// WAV, MP3 or M4A: transcribed, then ingested as text.
    Audio,
}

/// Why an upload is refused before it is queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("document is not valid UTF-8 text (first bad byte at offset {0})")]
    InvalidUtf8(usize),
    #[error("document is empty")]
    Empty,
    #[error("the ingest queue is full; retry later")]
    QueueFull,
    #[error("this tenant has {0} uploads waiting, the most it may; retry later")]
    TenantQueueFull(usize),
    #[error("audio needs a transcription provider (ingest.transcription_provider), and none is configured")]
    NoTranscriber,
    #[error(transparent)]
    Content(#[from] ContentError),
}

impl From<ragvault_store::StoreError> for SubmitError {
    fn from(e: ragvault_store::StoreError) -> Self {
        SubmitError::Content(ContentError::Store(e))
    }
}

impl From<ragvault_credentials::CredentialsError> for SubmitError {
    fn from(e: ragvault_credentials::CredentialsError) -> Self {
        SubmitError::Content(ContentError::Credentials(e))
    }
}

/// An upload as received.
#[derive(Clone, Debug)]
pub struct Upload {
    pub name: String,
    pub content_type: Option<String>,
    pub content: Vec<u8>,
    pub metadata: Option<serde_json::Value>,
}

/// The sealed job header: everything about the upload but its bytes.
#[derive(Serialize, Deserialize)]
struct JobHeader {
    name: String,
    format: Format,
    metadata: Option<serde_json::Value>,
    actor: String,
}

/// Detects the format from the bytes first and the declared type and name second: a binary file named
/// `.txt` is still refused.
pub fn detect_format(
    content: &[u8],
    declared: Option<&str>,
    name: &str,
) -> Result<Format, SubmitError> {
    let head = &content[..content.len().min(8192)];
    if head.starts_with(b"%PDF-") {
        return Ok(Format::Pdf);
    }
    if crate::transcribe::is_audio(head) {
        return Ok(Format::Audio);
    }
    let magic: [(&[u8], &str); 5] = [
        (
            b"PK\x03\x04",
            "ZIP-based files (docx, xlsx, zip) are not supported",
        ),
        (b"\x89PNG", "images are not supported"),
        (b"\xff\xd8\xff", "images are not supported"),
        (b"GIF8", "images are not supported"),
        (b"\x7fELF", "executables are not supported"),
    ];
    if let Some((_, why)) = magic.iter().find(|(m, _)| head.starts_with(m)) {
        return Err(SubmitError::UnsupportedMediaType((*why).to_owned()));
    }
    if head.contains(&0) {
        return Err(SubmitError::UnsupportedMediaType(
            "binary content".to_owned(),
        ));
    }
    if let Err(e) = std::str::from_utf8(content) {
        return Err(SubmitError::InvalidUtf8(e.valid_up_to()));
    }
    let declared = declared.map(|d| {
        d.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let lower_name = name.to_ascii_lowercase();
    let looks_html = {
        let start = String::from_utf8_lossy(&head[..head.len().min(512)])
            .trim_start()
            .to_ascii_lowercase();
        start.starts_with("<!doctype html") || start.starts_with("<html")
    };
    match declared.as_deref() {
        Some("text/html") | Some("application/xhtml+xml") => Ok(Format::Html),
        _ if looks_html || lower_name.ends_with(".html") || lower_name.ends_with(".htm") => {
            Ok(Format::Html)
        }
        Some("text/markdown") | Some("text/x-markdown") => Ok(Format::Markdown),
        Some("text/plain") | None | Some("") => {
            if lower_name.ends_with(".md") || lower_name.ends_with(".markdown") {
                Ok(Format::Markdown)
            } else {
                Ok(Format::PlainText)
            }
        }
        Some(other) => Err(SubmitError::UnsupportedMediaType(format!("`{other}`"))),
    }
}

/// Where ingest time goes, summed over finished jobs (nanoseconds), for `/metrics` and the benchmarks.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub jobs_done: AtomicU64,
    pub jobs_failed: AtomicU64,
    pub chunks: AtomicU64,
    pub text_bytes: AtomicU64,
    /// Opening the queued upload, parsing, chunking and the secret scan.
    pub parse_nanos: AtomicU64,
    pub embed_nanos: AtomicU64,
    /// Sealing and the Postgres transaction.
    pub store_nanos: AtomicU64,
    pub index_nanos: AtomicU64,
}

impl IngestStats {
    fn add(counter: &AtomicU64, since: Instant) -> Instant {
        let now = Instant::now();
        counter.fetch_add(
            u64::try_from((now - since).as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        now
    }
}

/// What became of an accepted upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// A new job, queued.
    Queued { job: JobId, document: DocumentId },
    /// The live document has this name and content already: nothing to do, recorded as a job already done.
    Unchanged {
        job: JobId,
        document: DocumentId,
        chunks: i32,
    },
    /// The same upload is queued already (a client that was interrupted and sent it again): that job.
    AlreadyQueued { job: JobId, document: DocumentId },
}

impl Submitted {
    pub fn job(&self) -> JobId {
        match self {
            Submitted::Queued { job, .. }
            | Submitted::Unchanged { job, .. }
            | Submitted::AlreadyQueued { job, .. } => *job,
        }
    }

    pub fn document(&self) -> DocumentId {
        match self {
            Submitted::Queued { document, .. }
            | Submitted::Unchanged { document, .. }
            | Submitted::AlreadyQueued { document, .. } => *document,
        }
    }
}

#[derive(Clone, Debug)]
pub struct PipelineSettings {
    pub workers: usize,
    /// Uploads one tenant may have waiting for a worker.
    pub queue_capacity: usize,
    /// Uploads all tenants together may have waiting.
    pub total_queue_capacity: usize,
    pub chunking: ChunkingConfig,
    pub secret_policy: SecretPolicy,
    /// Longest a parser may take on one document.
    pub parse_timeout: Duration,
}

pub struct Pipeline {
    transcriber: Option<Arc<crate::transcribe::Transcriber>>,
    store: Store,
    content: SealedContent,
    indexer: Indexer,
    tokenizer: Arc<dyn TokenCount>,
    settings: PipelineSettings,
    queue: FairQueue,
    stats: IngestStats,
    /// Jobs created before this are a previous process's to resume.
    started_at: time::OffsetDateTime,
}

impl Pipeline {
    /// Starts the worker pool; returns the pipeline and the worker tasks (abort them to stop).
    pub fn start(
        store: Store,
        content: SealedContent,
        indexer: Indexer,
        tokenizer: Arc<dyn TokenCount>,
        settings: PipelineSettings,
    ) -> (Arc<Pipeline>, Vec<tokio::task::JoinHandle<()>>) {
        Self::start_inner(store, content, indexer, tokenizer, settings, None)
    }

    fn start_inner(
        store: Store,
        content: SealedContent,
        indexer: Indexer,
        tokenizer: Arc<dyn TokenCount>,
        settings: PipelineSettings,
        transcriber: Option<Arc<crate::transcribe::Transcriber>>,
    ) -> (Arc<Pipeline>, Vec<tokio::task::JoinHandle<()>>) {
        let queue = FairQueue::new(settings.queue_capacity, settings.total_queue_capacity);
        let pipeline = Arc::new(Pipeline {
            transcriber,
            store,
            content,
            indexer,
            tokenizer,
            settings: settings.clone(),
            queue: queue.clone(),
            stats: IngestStats::default(),
            started_at: time::OffsetDateTime::now_utc(),
        });
        let workers = (0..settings.workers.max(1))
            .map(|_| {
                let (pipeline, queue) = (pipeline.clone(), queue.clone());
                tokio::spawn(async move {
                    while let Some((tenant, job)) = queue.pop().await {
                        pipeline.process(tenant, job).await;
                    }
                })
            })
            .collect();
        (pipeline, workers)
    }

    /// Validates and seals an upload into a queued job. Refuses at once when the queue is full, so
    /// callers get backpressure (429) instead of an unbounded backlog. An upload identical (by keyed hashes
    /// of name, content and metadata) to the live document, or to a job still under way, makes no new work.
    pub async fn submit(
        &self,
        tenant: TenantId,
        upload: Upload,
        actor: &str,
    ) -> Result<Submitted, SubmitError> {
        if upload.content.iter().all(u8::is_ascii_whitespace) {
            return Err(SubmitError::Empty);
        }
        let format = detect_format(
            &upload.content,
            upload.content_type.as_deref(),
            &upload.name,
        )?;
        if format == Format::Audio && self.transcriber.is_none() {
            return Err(SubmitError::NoTranscriber);
        }
        let (name_hash, content_hash) = self
            .content
            .upload_hashes(
                tenant,
                &upload.name,
                &upload.content,
                upload.metadata.as_ref(),
            )
            .await?;
        let size_bytes = i64::try_from(upload.content.len()).unwrap_or(i64::MAX);
        match self
            .store
            .match_upload(tenant, &name_hash, &content_hash)
            .await?
        {
            Some(UploadMatch::Pending { job, document }) => {
                return Ok(Submitted::AlreadyQueued { job, document })
            }
            Some(UploadMatch::Stored { document, chunks }) => {
                let job = JobId::new();
                self.store
                    .insert_unchanged_job(job, tenant, document, chunks, size_bytes)
                    .await?;
                return Ok(Submitted::Unchanged {
                    job,
                    document,
                    chunks,
                });
            }
            None => {}
        }
        let permit = self.queue.try_reserve(tenant).ok_or_else(|| {
            if self.queue.depth() >= self.settings.total_queue_capacity {
                SubmitError::QueueFull
            } else {
                SubmitError::TenantQueueFull(self.settings.queue_capacity)
            }
        })?;
        let key = self
            .content
            .active_key(tenant, DataKeyPurpose::Content)
            .await?;
        let (job_id, document_id) = (JobId::new(), DocumentId::new());
        let context = |ordinal| SealContext {
            purpose: SealPurpose::Upload,
            tenant,
            document: document_id,
            chunk: None,
            ordinal,
        };
        let header = JobHeader {
            name: upload.name,
            format,
            metadata: upload.metadata,
            actor: actor.to_owned(),
        };
        let header_json = serde_json::to_vec(&header)
            .map_err(|e| SubmitError::UnsupportedMediaType(e.to_string()))?;
        let job = NewJob {
            id: job_id,
            tenant_id: tenant,
            document_id,
            data_key_id: key.id(),
            payload_sealed: key.seal(&context(0), &upload.content)?,
            header_sealed: key.seal(&context(1), &header_json)?,
            size_bytes,
            name_hash,
            content_hash,
        };
        self.store.insert_job(&job).await?;
        permit.send(job_id);
        Ok(Submitted::Queued {
            job: job_id,
            document: document_id,
        })
    }

    /// Audio uploads are transcribed with this (otherwise refused with 415).
    pub fn start_with_transcriber(
        store: Store,
        content: SealedContent,
        indexer: Indexer,
        tokenizer: Arc<dyn TokenCount>,
        settings: PipelineSettings,
        transcriber: Option<Arc<crate::transcribe::Transcriber>>,
    ) -> (Arc<Pipeline>, Vec<tokio::task::JoinHandle<()>>) {
        Self::start_inner(store, content, indexer, tokenizer, settings, transcriber)
    }

    pub fn stats(&self) -> &IngestStats {
        &self.stats
    }

    /// Jobs waiting in this process's queue (not yet taken by a worker).
    pub fn queue_depth(&self) -> usize {
        self.queue.depth()
    }

    /// Queues every job a previous process left unfinished (past the admission bounds: they were admitted
    /// once).
    pub async fn resume_unfinished(&self) -> Result<usize, SubmitError> {
        let jobs = self.store.unfinished_jobs(self.started_at).await?;
        for (tenant, job) in &jobs {
            self.queue.push(*tenant, *job);
        }
        Ok(jobs.len())
    }

    /// Stops the workers once they finish the job in hand (queued jobs stay in Postgres for the next start).
    pub fn close(&self) {
        self.queue.close();
    }

    async fn process(&self, tenant: TenantId, job_id: JobId) {
        let job = match self.store.claim_job(job_id).await {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(e) => {
                // Postgres away: the job stays queued in the table; it is queued here again shortly, so it
                // does not wait for the next start. A job that cannot be claimed has cost nothing yet.
                tracing::warn!(%job_id, error = %e, "could not claim ingest job; retrying shortly");
                self.requeue_later(tenant, job_id, CLAIM_RETRY);
                return;
            }
        };
        match self.run(&job).await {
            Ok(chunks) => {
                self.stats.jobs_done.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%job_id, chunks, "ingest job done")
            }
            Err(JobFailure::Permanent { code, message }) => {
                self.stats.jobs_failed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%job_id, code, "ingest job failed");
                if let Err(e) = self.store.fail_job(job_id, code, &message).await {
                    tracing::warn!(%job_id, error = %e, "could not record the job failure");
                }
            }
            Err(JobFailure::Transient(reason)) => {
                // Dependencies down: leave the job queued for a later attempt (or the next start).
                tracing::warn!(%job_id, %reason, attempts = job.attempts, "ingest job interrupted; retrying later");
                if job.attempts < 5 {
                    self.requeue_later(
                        tenant,
                        job_id,
                        Duration::from_secs(2u64.pow(job.attempts.clamp(0, 5) as u32)),
                    );
                } else if let Err(e) = self
                    .store
                    .fail_job(job_id, "dependency_unavailable", &reason)
                    .await
                {
                    tracing::warn!(%job_id, error = %e, "could not record the job failure");
                }
            }
        }
    }

    /// Puts a job back on this process's queue after `delay`.
    fn requeue_later(&self, tenant: TenantId, job_id: JobId, delay: Duration) {
        let queue = self.queue.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.push(tenant, job_id);
        });
    }

    /// The tenant's `secret_policy`, or the pipeline default when the tenant has none.
    async fn secret_policy(&self, tenant: TenantId) -> Result<SecretPolicy, JobFailure> {
        let record = self
            .store
            .get_tenant(tenant)
            .await
            .map_err(|e| JobFailure::from_content(ContentError::Store(e)))?;
        Ok(record
            .policy
            .get("secret_policy")
            .and_then(|p| serde_json::from_value(p.clone()).ok())
            .unwrap_or(self.settings.secret_policy))
    }

    async fn run(&self, job: &JobRecord) -> Result<usize, JobFailure> {
        let started = Instant::now();
        let tenant = job.tenant_id;
        let (Some(key_id), Some(payload), Some(header)) =
            (job.data_key_id, &job.payload_sealed, &job.header_sealed)
        else {
            return Err(JobFailure::permanent(
                "internal_error",
                "job has no payload",
            ));
        };
        let key = self
            .content
            .key_by_id(tenant, key_id)
            .await
            .map_err(JobFailure::from_content)?;
        let context = |ordinal| SealContext {
            purpose: SealPurpose::Upload,
            tenant,
            document: job.document_id,
            chunk: None,
            ordinal,
        };
        let bytes = key
            .open(&context(0), payload)
            .map_err(|e| JobFailure::from_content(e.into()))?;
        let mut header: JobHeader = key
            .open(&context(1), header)
            .ok()
            .and_then(|h: Vec<u8>| serde_json::from_slice::<JobHeader>(&h).ok())
            .ok_or_else(|| JobFailure::permanent("internal_error", "job header is unreadable"))?;
        let mut format = header.format;
        let mut bytes = bytes;
        if format == Format::Audio {
            let Some(transcriber) = &self.transcriber else {
                return Err(JobFailure::permanent(
                    "unsupported_media_type",
                    "audio needs a transcription provider",
                ));
            };
            let transcript =
                transcriber
                    .transcribe(&bytes, &header.name)
                    .await
                    .map_err(|e| match e {
                        crate::transcribe::TranscriptionError::Unavailable(why) => {
                            JobFailure::Transient(why)
                        }
                        crate::transcribe::TranscriptionError::Refused(why) => {
                            JobFailure::permanent("transcription_failed", &why)
                        }
                    })?;
            // From here on the document is its transcript (the audio itself is not kept).
            bytes = transcript.into_bytes();
            format = Format::PlainText;
        }
        // Parsers run on a blocking thread with a time limit: hostile input (a PDF that sends the extractor
        // in circles) fails its job instead of stalling a worker. The thread itself cannot be stopped; it
        // finishes or dies with the process.
        let to_parse = bytes.clone();
        let parsing = tokio::task::spawn_blocking(move || match format {
            Format::PlainText => PlainTextParser.parse(&to_parse),
            Format::Markdown => MarkdownParser.parse(&to_parse),
            Format::Html => HtmlParser.parse(&to_parse),
            Format::Pdf => PdfParser.parse(&to_parse),
            Format::Audio => Err(IngestError::Malformed("audio reached the parser".into())),
        });
        let parsed = match tokio::time::timeout(self.settings.parse_timeout, parsing).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(IngestError::Malformed("the parser crashed".into())),
            Err(_) => {
                return Err(JobFailure::permanent(
                    "parse_timeout",
                    "the document took too long to parse",
                ))
            }
        }
        .map_err(|e| match e {
            IngestError::NoText => JobFailure::permanent(
                "no_text",
                "the document contains no text (a scanned PDF needs OCR first)",
            ),
            IngestError::InvalidUtf8 { .. } => {
                JobFailure::permanent("invalid_utf8", &e.to_string())
            }
            IngestError::Malformed(_) => {
                JobFailure::permanent("malformed_document", &e.to_string())
            }
        })?;
        let mut chunks = chunk_document(&parsed, &self.settings.chunking, self.tokenizer.as_ref());
        // Scan before anything is embedded or sent anywhere. Plain text and Markdown are scanned as uploaded
        // (line numbers are the file's). PDF and HTML are scanned as what is kept of them: the extracted text
        // under its headings. Markup, link targets and scripts are never stored or sent, and scanning them
        // refused real manuals for URLs that look random (W3C dated paths, mailing-list message ids).
        let extracted = matches!(format, Format::Pdf | Format::Html);
        let text: String = if extracted {
            parsed
                .sections
                .iter()
                .flat_map(|s| s.heading_path.iter().chain(std::iter::once(&s.text)))
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let findings = secrets::scan(&text);
        // The name and metadata are stored (sealed) and shown in citations: they are scanned as well.
        let metadata_text = header
            .metadata
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default();
        let in_name = secrets::scan(&header.name);
        let in_metadata = secrets::scan(&metadata_text);
        if !in_name.is_empty() || !in_metadata.is_empty() {
            match self.secret_policy(tenant).await? {
                SecretPolicy::Reject => {
                    let (place, kind) = match in_name.first() {
                        Some(f) => ("name", f.kind),
                        None => (
                            "metadata",
                            in_metadata.first().map(|f| f.kind).unwrap_or("secret"),
                        ),
                    };
                    return Err(JobFailure::permanent(
                        "contains_secret",
                        &format!("the document {place} contains a credential ({kind}); remove it or ask for the redact policy"),
                    ));
                }
                SecretPolicy::Redact => {
                    header.name = secrets::redact(&header.name, &in_name);
                    if !in_metadata.is_empty() {
                        let redacted = secrets::redact(&metadata_text, &in_metadata);
                        header.metadata = Some(serde_json::from_str(&redacted).map_err(|_| {
                            JobFailure::permanent(
                                "contains_secret",
                                "the document metadata contains a credential that cannot be redacted",
                            )
                        })?);
                    }
                }
            }
        }
        if let Some(first) = findings.first() {
            match self.secret_policy(tenant).await? {
                SecretPolicy::Reject => {
                    return Err(JobFailure::permanent(
                        "contains_secret",
                        &format!(
                            "the document contains a credential ({}) on line {}{}; remove it or ask for the redact policy",
                            first.kind,
                            first.line,
                            if extracted { " of its text" } else { "" }
                        ),
                    ))
                }
                SecretPolicy::Redact => {
                    for chunk in &mut chunks {
                        let found = secrets::scan(&chunk.text);
                        if !found.is_empty() {
                            chunk.text = secrets::redact(&chunk.text, &found);
                            chunk.token_count =
                                u32::try_from(self.tokenizer.count(&chunk.text)).unwrap_or(u32::MAX);
                        }
                        // Headings are stored (sealed) and cited too.
                        for heading in &mut chunk.heading_path {
                            let found = secrets::scan(heading);
                            if !found.is_empty() {
                                *heading = secrets::redact(heading, &found);
                            }
                        }
                    }
                }
            }
        }
        let texts: Vec<String> = chunks
            .iter()
            .map(|c| embedding_text(&c.heading_path, &c.text))
            .collect();
        let parsed_at = IngestStats::add(&self.stats.parse_nanos, started);
        let who = crate::indexing::EmbeddingFor {
            tenant,
            principal: header.actor.clone(),
            request_id: Some(format!("job:{}", job.id)),
        };
        let vectors = self
            .indexer
            .embed(&who, &texts)
            .await
            .map_err(JobFailure::from_content)?;
        let embedded_at = IngestStats::add(&self.stats.embed_nanos, parsed_at);
        let listed = |key: &str| -> Vec<String> {
            header
                .metadata
                .as_ref()
                .and_then(|m| m.get(key))
                .and_then(|t| serde_json::from_value(t.clone()).ok())
                .unwrap_or_default()
        };
        let tags = listed("tags");
        let groups = listed("groups");
        let upload = DocumentUpload {
            document_id: job.document_id,
            name: &header.name,
            metadata: header.metadata.as_ref(),
            content: &bytes,
            chunks: &chunks,
            vectors: Some(ChunkVectors {
                model_id: self.indexer.embedder().model_id(),
                vectors: &vectors,
            }),
            tags: &tags,
            groups: &groups,
        };
        let stored = self
            .content
            .put_document(tenant, upload, &header.actor, None, Some(job.id))
            .await
            .map_err(JobFailure::from_content)?;
        let stored_at = IngestStats::add(&self.stats.store_nanos, embedded_at);
        self.stats
            .chunks
            .fetch_add(chunks.len() as u64, Ordering::Relaxed);
        self.stats
            .text_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        // The document is committed; the index follows. Should this fail, the reconciliation at the next
        // start inserts what is missing (Postgres is the source of truth).
        if !stored.unchanged {
            let points = stored
                .chunks
                .iter()
                .map(|(_, point)| *point)
                .zip(vectors)
                .map(|(id, vector)| ragvault_search::IndexPoint { id, vector })
                .collect();
            if let Err(e) = self.indexer.add_points(tenant, points).await {
                tracing::error!(job_id = %job.id, error = %e, "document stored but not yet indexed; reconciliation will index it");
            }
            if let Err(e) = self
                .indexer
                .remove_points(tenant, &stored.replaced_points)
                .await
            {
                tracing::error!(job_id = %job.id, error = %e, "replaced chunks still indexed; reconciliation will drop them");
            }
            // Only now is the document searchable: `done` says so. Left `indexing`, the job is finished by the
            // next start's reconciliation.
            if let Err(e) = self.store.finish_indexed_job(job.id).await {
                tracing::warn!(job_id = %job.id, error = %e, "indexed job not marked done; the next start will");
            }
        }
        IngestStats::add(&self.stats.index_nanos, stored_at);
        Ok(chunks.len())
    }
}

enum JobFailure {
    Permanent { code: &'static str, message: String },
    Transient(String),
}

impl JobFailure {
    fn permanent(code: &'static str, message: &str) -> JobFailure {
        JobFailure::Permanent {
            code,
            message: message.to_owned(),
        }
    }

    fn from_content(e: ContentError) -> JobFailure {
        match &e {
            ContentError::Store(s) if s.is_unavailable() => JobFailure::Transient(e.to_string()),
            ContentError::Credentials(c) if c.is_outage() => JobFailure::Transient(e.to_string()),
            ContentError::Credentials(c) if c.is_integrity_failure() => {
                JobFailure::permanent("integrity_failure", "the queued upload failed to open")
            }
            ContentError::BudgetExceeded { .. } => JobFailure::permanent(
                "budget_exceeded",
                "the tenant's monthly budget cannot cover embedding this document",
            ),
            ContentError::Metering(_) => JobFailure::Transient(e.to_string()),
            ContentError::Embedding(cause) => {
                // The cause names the provider and status, never a key or the text.
                tracing::warn!(error = %cause, "embedding failed");
                JobFailure::permanent(
                    "embedding_failed",
                    "the embedding model failed on this document",
                )
            }
            _ => JobFailure::permanent("internal_error", "the document could not be stored"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_detected_from_content_first() {
        let ok = |c: &[u8], t: Option<&str>, n: &str| detect_format(c, t, n).ok();
        assert_eq!(ok(b"hello", None, "a.txt"), Some(Format::PlainText));
        assert_eq!(ok(b"# Title", None, "a.md"), Some(Format::Markdown));
        assert_eq!(
            ok(b"# Title", Some("text/markdown; charset=utf-8"), "a"),
            Some(Format::Markdown)
        );
        assert_eq!(
            ok(b"%PDF-1.7 ...", Some("text/plain"), "x.txt"),
            Some(Format::Pdf)
        );
        assert!(matches!(
            detect_format(b"PK\x03\x04...", None, "x.txt"),
            Err(SubmitError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            detect_format(b"\x89PNG\r\n", None, "x.txt"),
            Err(SubmitError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            detect_format(b"text\0with nul", None, "x.txt"),
            Err(SubmitError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            detect_format(b"ok \xff\xfe", None, "x.txt"),
            Err(SubmitError::InvalidUtf8(3))
        ));
        assert!(matches!(
            detect_format(b"hi", Some("application/octet-stream"), "x"),
            Err(SubmitError::UnsupportedMediaType(_))
        ));
        assert_eq!(
            ok(b"<!DOCTYPE html><p>x", None, "x.txt"),
            Some(Format::Html)
        );
        assert_eq!(ok(b"<p>x</p>", Some("text/html"), "x"), Some(Format::Html));
    }
}
