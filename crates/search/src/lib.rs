//! Similarity search over pseudonymous points.
//!
//! Architecture invariant: an index sees only a partition key (a keyed pseudonym of the tenant), point ids
//! (keyed pseudonyms of chunk ids) and vectors. It never sees text, tenant ids or slugs.

use async_trait::async_trait;
use ragvault_core::PointId;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("vector has {got} dimensions, index partition expects {expected}")]
    DimensionMismatch { expected: usize, got: usize },
    #[error("index backend failed: {0}")]
    Backend(String),
}

/// An opaque partition name derived by the credentials crate; shown nowhere else.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PartitionKey(pub String);

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

/// One backend of the vector index. Every call is scoped to one partition.
#[async_trait]
pub trait VectorIndex: Send + Sync {
    async fn upsert(
        &self,
        partition: &PartitionKey,
        points: Vec<IndexPoint>,
    ) -> Result<(), SearchError>;
    async fn delete(&self, partition: &PartitionKey, ids: &[PointId]) -> Result<(), SearchError>;
    /// The `k` nearest live points, best first. `ef` trades recall for speed where the backend has it.
    async fn search(
        &self,
        partition: &PartitionKey,
        query: &[f32],
        k: usize,
        ef: usize,
    ) -> Result<Vec<ScoredPoint>, SearchError>;
    async fn count(&self, partition: &PartitionKey) -> Result<usize, SearchError>;
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
