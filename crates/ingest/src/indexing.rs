//! Keeps the vector index in step with Postgres: embeds chunks in batches, adds and removes index points,
//! and reconciles a tenant's partition against the chunks table (the source of truth) at start.

use crate::sealed::{ContentError, SealedContent};
use ragvault_core::{PointId, TenantId};
use ragvault_embedding::{Embedder, EmbeddingCall};
use ragvault_search::{IndexPoint, Partition, VectorIndex};
use ragvault_store::Store;
use std::collections::HashSet;
use std::sync::Arc;

/// Points refilled per round trip when reconciling.
const RECONCILE_BATCH: usize = 256;

/// A tenant's index partition against its chunks in Postgres (the source of truth).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionDifference {
    pub in_postgres: usize,
    pub in_index: usize,
    /// Chunks whose point the index lacks.
    pub missing: Vec<PointId>,
    /// Points with no chunk behind them.
    pub stale: Vec<PointId>,
}

impl PartitionDifference {
    pub fn is_consistent(&self) -> bool {
        self.missing.is_empty() && self.stale.is_empty()
    }
}

/// What a reconciliation changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Points in Postgres the index lacked, now inserted.
    pub inserted: usize,
    /// Points in the index with no chunk behind them, now removed.
    pub removed: usize,
    /// Of the inserted, those whose vector had to be computed again (none stored, or another model's).
    pub reembedded: usize,
}

/// Who an embedding is made for, so a remote model's cost lands on the right tenant and principal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddingFor {
    pub tenant: TenantId,
    /// `api_key:<id>`, `widget:<token id>`, or `system:<task>` for the service's own work.
    pub principal: String,
    pub request_id: Option<String>,
}

/// Budgets and meters remote embedding requests (the server implements it over its budget guard and usage
/// writer). Models in the process are never metered.
#[async_trait::async_trait]
pub trait EmbeddingMeter: Send + Sync {
    /// Holds what embedding at most `max_input_tokens` may cost `who.tenant`, before any request is sent;
    /// [`ContentError::BudgetExceeded`] when the budget cannot cover it.
    async fn reserve(
        &self,
        who: &EmbeddingFor,
        max_input_tokens: u64,
    ) -> Result<Box<dyn EmbeddingCharge>, ContentError>;
}

/// A reservation made by [`EmbeddingMeter::reserve`].
#[async_trait::async_trait]
pub trait EmbeddingCharge: Send {
    /// Settles to what `calls` cost and records one usage row per request, durably, before returning.
    async fn settle(self: Box<Self>, calls: Vec<EmbeddingCall>) -> Result<(), ContentError>;
}

#[derive(Clone)]
pub struct Indexer {
    content: SealedContent,
    store: Store,
    index: Arc<dyn VectorIndex>,
    embedder: Arc<dyn Embedder>,
    meter: Option<Arc<dyn EmbeddingMeter>>,
}

impl Indexer {
    pub fn new(
        content: SealedContent,
        store: Store,
        index: Arc<dyn VectorIndex>,
        embedder: Arc<dyn Embedder>,
    ) -> Indexer {
        Indexer {
            content,
            store,
            index,
            embedder,
            meter: None,
        }
    }

    /// Meters every remote embedding request through `meter`.
    pub fn with_meter(mut self, meter: Arc<dyn EmbeddingMeter>) -> Indexer {
        self.meter = Some(meter);
        self
    }

    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    pub fn index(&self) -> &Arc<dyn VectorIndex> {
        &self.index
    }

    /// The tenant's partition for the current model.
    pub async fn partition(&self, tenant: TenantId) -> Result<Partition, ContentError> {
        Ok(self.partition_for(&self.content.index_key(tenant).await?))
    }

    /// The partition named by an index key the caller already holds (saves a key lookup per query).
    pub fn partition_for(&self, key: &ragvault_credentials::IndexKey) -> Partition {
        Partition {
            name: key.partition_name(self.embedder.model_id()),
            model_id: self.embedder.model_id().to_owned(),
            dimension: self.embedder.dimension(),
        }
    }

    /// Embeds texts, batching texts of similar length together (less padding per batch); the vectors come
    /// back in input order.
    pub async fn embed(
        &self,
        who: &EmbeddingFor,
        texts: &[String],
    ) -> Result<Vec<Vec<f32>>, ContentError> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for batch in order.chunks(self.embedder.max_batch().max(1)) {
            let inputs: Vec<String> = batch.iter().map(|&i| texts[i].clone()).collect();
            let out = self.embed_batch(who, &inputs).await?;
            ragvault_embedding::check_output(self.embedder.as_ref(), inputs.len(), &out)?;
            for (&i, vector) in batch.iter().zip(out) {
                vectors[i] = vector;
            }
        }
        Ok(vectors)
    }

    async fn embed_batch(
        &self,
        who: &EmbeddingFor,
        inputs: &[String],
    ) -> Result<Vec<Vec<f32>>, ContentError> {
        let meter = match &self.meter {
            Some(meter) if self.embedder.billing().is_some() => meter,
            _ => return Ok(self.embedder.embed_batch(inputs).await?),
        };
        // Every tokenizer spends at least one byte per token, so the byte count bounds the bill.
        let max_input_tokens = inputs.iter().map(|t| t.len() as u64).sum();
        let charge = meter.reserve(who, max_input_tokens).await?;
        let batch = self.embedder.embed_batch_metered(inputs).await;
        charge.settle(batch.calls).await?;
        Ok(batch.vectors?)
    }

    pub async fn add_points(
        &self,
        tenant: TenantId,
        points: Vec<IndexPoint>,
    ) -> Result<(), ContentError> {
        if points.is_empty() {
            return Ok(());
        }
        let partition = self.partition(tenant).await?;
        Ok(self.index.upsert(&partition, points).await?)
    }

    pub async fn remove_points(
        &self,
        tenant: TenantId,
        ids: &[PointId],
    ) -> Result<(), ContentError> {
        if ids.is_empty() {
            return Ok(());
        }
        let partition = self.partition(tenant).await?;
        Ok(self.index.delete(&partition, ids).await?)
    }

    /// How the tenant's partition differs from its chunks in Postgres. Between a chunk's commit and its
    /// index upsert an ingest in flight shows as missing points; at rest the two are equal.
    pub async fn difference(&self, tenant: TenantId) -> Result<PartitionDifference, ContentError> {
        let partition = self.partition(tenant).await?;
        let in_postgres: HashSet<PointId> = self
            .store
            .tenant_points(tenant)
            .await?
            .into_iter()
            .collect();
        let in_index = self.index.point_ids(&partition).await?;
        let mut stale: Vec<PointId> = in_index.difference(&in_postgres).copied().collect();
        let mut missing: Vec<PointId> = in_postgres.difference(&in_index).copied().collect();
        stale.sort();
        missing.sort();
        Ok(PartitionDifference {
            in_postgres: in_postgres.len(),
            in_index: in_index.len(),
            missing,
            stale,
        })
    }

    /// Makes the tenant's partition hold exactly the points of its chunks in Postgres: missing points are
    /// inserted (from the sealed vectors, or embedded again when there is none for this model) and points
    /// without a chunk are dropped.
    pub async fn reconcile(&self, tenant: TenantId) -> Result<ReconcileReport, ContentError> {
        let partition = self.partition(tenant).await?;
        let PartitionDifference { stale, missing, .. } = self.difference(tenant).await?;
        let mut report = ReconcileReport {
            removed: stale.len(),
            ..ReconcileReport::default()
        };
        self.index.delete(&partition, &stale).await?;
        for batch in missing.chunks(RECONCILE_BATCH) {
            let found = self
                .content
                .point_vectors(tenant, batch, self.embedder.model_id())
                .await?;
            let mut points: Vec<IndexPoint> = Vec::with_capacity(found.len());
            let mut to_embed: Vec<PointId> = Vec::new();
            for point in found {
                match point.vector {
                    Some(vector) => points.push(IndexPoint {
                        id: point.point_id,
                        vector,
                    }),
                    None => to_embed.push(point.point_id),
                }
            }
            if !to_embed.is_empty() {
                let chunks = self.content.open_points(tenant, &to_embed).await?;
                let texts: Vec<String> = chunks
                    .iter()
                    .map(|c| embedding_text(&c.heading_path, &c.text))
                    .collect();
                let who = EmbeddingFor {
                    tenant,
                    principal: "system:reconcile".to_owned(),
                    request_id: None,
                };
                let vectors = self.embed(&who, &texts).await?;
                let made: Vec<(PointId, Vec<f32>)> =
                    chunks.iter().map(|c| c.point_id).zip(vectors).collect();
                self.content
                    .store_vectors(tenant, self.embedder.model_id(), &made)
                    .await?;
                report.reembedded += made.len();
                points.extend(
                    made.into_iter()
                        .map(|(id, vector)| IndexPoint { id, vector }),
                );
            }
            report.inserted += points.len();
            self.index.upsert(&partition, points).await?;
        }
        Ok(report)
    }
}

/// What is embedded for a chunk: its heading path first, so a chunk deep in a section still carries what the
/// section is about.
pub fn embedding_text(heading_path: &[String], text: &str) -> String {
    if heading_path.is_empty() {
        text.to_owned()
    } else {
        format!("{}\n{}", heading_path.join(" > "), text)
    }
}
