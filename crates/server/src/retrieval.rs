//! Retrieval: a query becomes the tenant's best chunks, opened. Vector search (the query embedded by the
//! same model that built the partition) and the blind keyword index (BM25 over keyed term hashes) each bring
//! candidates; hybrid mode fuses them by reciprocal rank. Filters resolve to an allow-list of points that
//! both searches enforce inside the search, not after it.

use crate::config::{SearchMode, SearchSettings};
use ragvault_core::{DocumentId, PointId, TenantId};
use ragvault_ingest::indexing::Indexer;
use ragvault_ingest::sealed::{group_hash, tag_hash, ContentError, SealedContent};
use ragvault_search::{keyword, reciprocal_rank_fusion, VectorQuery};
use ragvault_store::Store;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Characters of chunk text in a snippet.
const SNIPPET_CHARS: usize = 280;

#[derive(Clone, Debug)]
pub struct RetrievalQuery {
    pub text: String,
    pub top_k: usize,
    pub mode: SearchMode,
    pub documents: Option<Vec<DocumentId>>,
    pub tags: Vec<String>,
    /// The principal's access groups; `None` = the whole tenant. With `Some`, documents restricted to other
    /// groups are excluded inside the search.
    pub groups: Option<Vec<String>>,
    /// Whom the query embedding is metered to.
    pub who: ragvault_ingest::indexing::EmbeddingFor,
}

/// A retrieved chunk, opened.
#[derive(Clone, Debug, Serialize)]
pub struct RetrievedChunk {
    pub document_id: DocumentId,
    pub name: String,
    /// The chunk's ordinal within its document.
    pub chunk: u32,
    pub heading_path: Vec<String>,
    pub score: f32,
    pub snippet: String,
    #[serde(skip)]
    pub text: String,
    /// The chunk's pseudonymous index id: what the per-ask audit event records.
    #[serde(skip)]
    pub point_id: PointId,
}

#[derive(Clone)]
pub struct Retriever {
    pub store: Store,
    pub content: SealedContent,
    pub indexer: Indexer,
    pub settings: SearchSettings,
    pub ef_search: usize,
    /// Retrieval time without the query embedding (index and keyword search, opening chunks), per mode.
    pub metrics: std::sync::Arc<ragvault_metrics::HistogramVec>,
}

impl Retriever {
    pub async fn retrieve(
        &self,
        tenant: TenantId,
        query: &RetrievalQuery,
    ) -> Result<Vec<RetrievedChunk>, ContentError> {
        Ok(self.retrieve_timed(tenant, query).await?.0)
    }

    /// [`Retriever::retrieve`], also returning where its time went (the query embedding is a model's time,
    /// not ours: overhead figures leave it out).
    pub async fn retrieve_timed(
        &self,
        tenant: TenantId,
        query: &RetrievalQuery,
    ) -> Result<(Vec<RetrievedChunk>, RetrievalTimes), ContentError> {
        let started = std::time::Instant::now();
        let mode = match query.mode {
            SearchMode::Vector => "vector",
            SearchMode::Keyword => "keyword",
            SearchMode::Hybrid => "hybrid",
        };
        // Counts and the mode only: the query text stays out of traces.
        let span = tracing::info_span!(
            "search",
            mode,
            top_k = query.top_k,
            chunks = tracing::field::Empty
        );
        let (chunks, times) = self.search(tenant, query).instrument(span.clone()).await?;
        span.record("chunks", chunks.len());
        self.metrics
            .observe(&[mode], started.elapsed().saturating_sub(times.embed));
        Ok((chunks, times))
    }

    async fn search(
        &self,
        tenant: TenantId,
        query: &RetrievalQuery,
    ) -> Result<(Vec<RetrievedChunk>, RetrievalTimes), ContentError> {
        let index_key = self.content.index_key(tenant).await?;
        let allow: Option<HashSet<PointId>> = if query.documents.is_some() || !query.tags.is_empty()
        {
            let tags: Vec<Vec<u8>> = query.tags.iter().map(|t| tag_hash(&index_key, t)).collect();
            let points = self
                .store
                .filtered_points(tenant, query.documents.as_deref(), &tags)
                .await?;
            if points.is_empty() {
                return Ok((Vec::new(), RetrievalTimes::default()));
            }
            Some(points.into_iter().collect())
        } else {
            None
        };
        let deny: Option<HashSet<PointId>> = match &query.groups {
            None => None,
            Some(groups) => {
                let hashes: Vec<Vec<u8>> =
                    groups.iter().map(|g| group_hash(&index_key, g)).collect();
                Some(
                    self.store
                        .denied_points(tenant, &hashes)
                        .await?
                        .into_iter()
                        .collect(),
                )
            }
        };
        let candidates = query.top_k * self.settings.candidate_factor;
        // The keyword search needs no embedding: it runs in Postgres while the query is embedded.
        let vector_side = async {
            if query.mode == SearchMode::Keyword {
                return Ok((Vec::new(), Duration::ZERO, Duration::ZERO));
            }
            let embed_started = std::time::Instant::now();
            let embedder = self.indexer.embedder();
            let vector = self
                .indexer
                .embed(&query.who, std::slice::from_ref(&query.text))
                .instrument(tracing::info_span!(
                    "embed",
                    model = embedder.model_id(),
                    provider = embedder.billing().map_or("local", |(provider, _)| provider),
                    texts = 1
                ))
                .await?
                .pop()
                .unwrap_or_default();
            let embed_time = embed_started.elapsed();
            let index_started = Instant::now();
            let partition = self.indexer.partition_for(&index_key);
            let hits: Vec<(PointId, f32)> = self
                .indexer
                .index()
                .search(
                    &partition,
                    &VectorQuery {
                        vector,
                        k: candidates,
                        ef: self.ef_search,
                        allow: allow.clone(),
                        deny: deny.clone(),
                    },
                )
                .await?
                .into_iter()
                .map(|p| (p.id, p.score))
                .collect();
            Ok::<_, ContentError>((hits, embed_time, index_started.elapsed()))
        };
        let keyword_side = async {
            if query.mode == SearchMode::Vector {
                return Ok((Vec::new(), Duration::ZERO));
            }
            let keyword_started = Instant::now();
            let hashes: Vec<Vec<u8>> = keyword::query_terms(&query.text)
                .iter()
                .map(|t| index_key.term_hash(t).to_vec())
                .collect();
            let allow_list: Option<Vec<PointId>> =
                allow.as_ref().map(|a| a.iter().copied().collect());
            let deny_list: Option<Vec<PointId>> = deny
                .as_ref()
                .filter(|d| !d.is_empty())
                .map(|d| d.iter().copied().collect());
            let hits: Vec<(PointId, f32)> = self
                .store
                .keyword_search(
                    tenant,
                    &hashes,
                    i64::try_from(candidates).unwrap_or(i64::MAX),
                    allow_list.as_deref(),
                    deny_list.as_deref(),
                )
                .await?
                .into_iter()
                .map(|(id, score)| (id, score as f32))
                .collect();
            Ok::<_, ContentError>((hits, keyword_started.elapsed()))
        };
        let ((vector_hits, embed, index), (keyword_hits, keyword)) =
            tokio::try_join!(vector_side, keyword_side)?;
        let ranked: Vec<(PointId, f32)> = match query.mode {
            SearchMode::Vector => vector_hits,
            SearchMode::Keyword => keyword_hits,
            SearchMode::Hybrid => {
                let vector_ids: Vec<PointId> = vector_hits.iter().map(|(id, _)| *id).collect();
                let keyword_ids: Vec<PointId> = keyword_hits.iter().map(|(id, _)| *id).collect();
                reciprocal_rank_fusion(
                    &[
                        (&vector_ids, self.settings.vector_weight),
                        (&keyword_ids, self.settings.keyword_weight),
                    ],
                    self.settings.rrf_k,
                )
            }
        };
        let top: Vec<(PointId, f32)> = ranked.into_iter().take(query.top_k).collect();
        let ids: Vec<PointId> = top.iter().map(|(id, _)| *id).collect();
        let scores: HashMap<PointId, f32> = top.into_iter().collect();
        let unseal =
            tracing::info_span!("unseal", points = ids.len(), chunks = tracing::field::Empty);
        let unseal_started = Instant::now();
        let (chunks, names) = self.open(tenant, &ids).instrument(unseal.clone()).await?;
        let times = RetrievalTimes {
            embed,
            index,
            keyword,
            unseal: unseal_started.elapsed(),
        };
        unseal.record("chunks", chunks.len());
        let mut out = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            // A document replaced between the two reads: its chunks went with it.
            let Some(name) = names.get(&chunk.document_id).cloned() else {
                continue;
            };
            out.push(RetrievedChunk {
                document_id: chunk.document_id,
                name,
                chunk: chunk.ordinal,
                heading_path: chunk.heading_path,
                score: scores.get(&chunk.point_id).copied().unwrap_or_default(),
                snippet: snippet(&chunk.text),
                text: chunk.text,
                point_id: chunk.point_id,
            });
        }
        Ok((out, times))
    }
}

impl Retriever {
    /// Decrypts the chunks behind `ids` and their documents' names. Points whose chunk went away since the
    /// index saw them are skipped.
    async fn open(
        &self,
        tenant: TenantId,
        ids: &[PointId],
    ) -> Result<
        (
            Vec<ragvault_ingest::sealed::OpenedChunk>,
            HashMap<DocumentId, String>,
        ),
        ContentError,
    > {
        let chunks = self.content.open_points(tenant, ids).await?;
        let mut document_ids: Vec<DocumentId> = chunks.iter().map(|c| c.document_id).collect();
        document_ids.sort_by_key(|d| d.0);
        document_ids.dedup();
        let names = self
            .content
            .document_summaries(tenant, &document_ids)
            .await?
            .into_iter()
            .map(|d| (d.id, d.name))
            .collect();
        Ok((chunks, names))
    }
}

/// Where one retrieval's time went, for the `server-timing` header. The vector side (embed, then index) and
/// the keyword side run at the same time; opening the chunks follows both.
#[derive(Clone, Copy, Debug, Default)]
pub struct RetrievalTimes {
    /// Embedding the query: a model's time.
    pub embed: Duration,
    /// The approximate nearest neighbour search.
    pub index: Duration,
    /// The keyword search in Postgres.
    pub keyword: Duration,
    /// Reading and decrypting the chosen chunks and their documents' names.
    pub unseal: Duration,
}

fn snippet(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= SNIPPET_CHARS {
        flat
    } else {
        let cut: String = flat.chars().take(SNIPPET_CHARS).collect();
        format!("{}…", cut.trim_end())
    }
}
