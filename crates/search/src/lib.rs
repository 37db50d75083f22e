//! Similarity search over pseudonymous points.
//!
//! Architecture invariant: an index sees only a partition name (a keyed pseudonym of the tenant), point ids
//! (keyed pseudonyms of chunk ids) and vectors. It never sees text, tenant ids or slugs.
//!
//! Point vectors are immutable per id: a point id is a keyed hash of a chunk id, chunks are never edited
//! (a re-upload makes new chunks), and another embedding model builds another partition. Backends rely on
//! this to make upserts idempotent.

use async_trait::async_trait;
use ragvault_core::PointId;
use std::collections::HashSet;
use std::path::Path;

mod distance;
mod embedded;
pub mod keyword;
mod qdrant;
mod wal;

pub use distance::DistUnitCosine;
pub use embedded::{EmbeddedIndex, EmbeddedSettings};
pub use qdrant::{QdrantIndex, QdrantSettings};

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("vector has {got} dimensions, index partition expects {expected}")]
    DimensionMismatch { expected: usize, got: usize },
    #[error("index partition was built with model `{built_with}`, not `{asked}`")]
    ModelMismatch { built_with: String, asked: String },
    #[error("index files of a partition are unusable: {0}")]
    Corrupt(String),
    #[error("index i/o failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("index backend failed: {0}")]
    Backend(String),
    /// The partition's tenant was deleted: its name is never valid again (it was keyed by a destroyed key).
    #[error("index partition was dropped")]
    Dropped,
}

/// One tenant's partition of the index, as the credentials crate names it, and the model whose vectors it
/// holds (an index never mixes models: a query from another model is refused).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Partition {
    /// Opaque keyed name (`IndexKey::partition_name`); safe as a file or collection key.
    pub name: String,
    pub model_id: String,
    pub dimension: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct IndexPoint {
    pub id: PointId,
    pub vector: Vec<f32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ScoredPoint {
    pub id: PointId,
    /// Cosine similarity in [-1, 1]; higher is closer.
    pub score: f32,
}

/// A nearest-neighbour query.
#[derive(Clone, Debug)]
pub struct VectorQuery {
    pub vector: Vec<f32>,
    pub k: usize,
    /// Search breadth: higher finds more true neighbours, slower. Raised to at least `k`.
    pub ef: usize,
    /// When set, only these points may be returned (document and tag filters resolve to this).
    pub allow: Option<HashSet<PointId>>,
    /// Points that must never be returned (documents of access groups the principal lacks), enforced inside
    /// the search so a restricted point cannot take a result slot, let alone be returned.
    pub deny: Option<HashSet<PointId>>,
}

impl VectorQuery {
    /// Whether the filters let `id` through.
    pub fn permits(&self, id: PointId) -> bool {
        self.allow.as_ref().is_none_or(|a| a.contains(&id))
            && self.deny.as_ref().is_none_or(|d| !d.contains(&id))
    }
}

/// One backend of the vector index. Every call is scoped to one partition.
#[async_trait]
pub trait VectorIndex: Send + Sync {
    /// Adds points; a point already present is left as it is (vectors never change per id).
    async fn upsert(
        &self,
        partition: &Partition,
        points: Vec<IndexPoint>,
    ) -> Result<(), SearchError>;
    /// Removes points; unknown ids are ignored.
    async fn delete(&self, partition: &Partition, ids: &[PointId]) -> Result<(), SearchError>;
    /// The `k` nearest live points, best first.
    async fn search(
        &self,
        partition: &Partition,
        query: &VectorQuery,
    ) -> Result<Vec<ScoredPoint>, SearchError>;
    /// Live points in the partition.
    async fn count(&self, partition: &Partition) -> Result<usize, SearchError>;
    /// Every live point id, for reconciling the index against Postgres.
    async fn point_ids(&self, partition: &Partition) -> Result<HashSet<PointId>, SearchError>;
    /// Removes the whole partition (tenant deletion) and retires its name for the life of the process:
    /// every later call on it is `Dropped`, so a task that derived the name before the drop (a start-up
    /// reconciliation, a late ingest job) cannot bring the partition back. Names are keyed by the tenant's
    /// destroyed key, so no live tenant can ever need a retired name.
    async fn drop_partition(&self, partition_name: &str) -> Result<(), SearchError>;
    /// Writes a consistent copy of the partition into `dir`.
    async fn snapshot(&self, partition: &Partition, dir: &Path) -> Result<(), SearchError>;
    /// Replaces the partition with a copy written by `snapshot`.
    async fn restore(&self, partition: &Partition, dir: &Path) -> Result<(), SearchError>;
    /// Makes pending writes durable in the backend's own format (the embedded index dumps its graph).
    async fn flush(&self) -> Result<(), SearchError>;
    /// Names of every partition the backend holds (to find partitions of deleted tenants).
    async fn partitions(&self) -> Result<Vec<String>, SearchError>;
    /// Whether the backend can serve and store (for `/readyz`).
    async fn check(&self) -> Result<(), SearchError>;

    /// `(partitions, live points)` this process holds in memory, for `/metrics`; cheap (no partition is
    /// loaded for it). `None` for backends that keep nothing in process (Qdrant reports its own metrics).
    fn loaded_size(&self) -> Option<(usize, usize)> {
        None
    }
}

/// Merges ranked lists by reciprocal rank fusion: each list contributes `weight / (k + rank)` per item.
pub fn reciprocal_rank_fusion(lists: &[(&[PointId], f32)], k: f32) -> Vec<(PointId, f32)> {
    let mut scores: Vec<(PointId, f32)> = Vec::new();
    for (list, weight) in lists {
        for (rank, id) in list.iter().enumerate() {
            let add = weight / (k + rank as f32 + 1.0);
            match scores.iter_mut().find(|(seen, _)| seen == id) {
                Some((_, score)) => *score += add,
                None => scores.push((*id, add)),
            }
        }
    }
    scores.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scores
}

/// Scales a vector to unit length (a zero vector stays zero), so cosine similarity is a dot product.
pub fn normalize(vector: &mut [f32]) {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_rewards_agreement() {
        let vector = [PointId(1), PointId(2), PointId(3)];
        let keyword = [PointId(3), PointId(4)];
        let fused = reciprocal_rank_fusion(&[(&vector, 1.0), (&keyword, 1.0)], 60.0);
        assert_eq!(fused[0].0, PointId(3));
        assert_eq!(fused.len(), 4);
    }
}
