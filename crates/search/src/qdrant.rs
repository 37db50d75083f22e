//! The Qdrant backend for scale-out: one collection per vector width (`<prefix>_d<dimension>`), every point
//! carrying a single payload field, `partition` (the opaque keyed partition name, indexed with
//! `is_tenant = true` so Qdrant co-locates a tenant's points), and every call filtered by it.
//!
//! Qdrant point ids are global to a collection, so ragvault's 64-bit point id is combined with a keyed hash of
//! the partition into a UUID: the first 8 bytes are SHA-256(partition name)[..8], the last 8 the point id.
//! Two tenants' points can then never overwrite each other, and the point id reads back from the UUID
//! without storing anything else in the payload.

use crate::{IndexPoint, Partition, ScoredPoint, SearchError, VectorIndex, VectorQuery};
use async_trait::async_trait;
use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    DeletePointsBuilder, Distance, FieldType, Filter, HnswConfigDiffBuilder,
    KeywordIndexParamsBuilder, PointId as QdrantPointId, PointStruct, PointsIdsList,
    ScrollPointsBuilder, SearchParamsBuilder, SearchPointsBuilder, UpsertPointsBuilder,
    VectorParamsBuilder,
};
use qdrant_client::{Payload, Qdrant};
use ragvault_core::PointId;
use std::collections::HashSet;
use std::path::Path;
use tokio::sync::Mutex;

const PARTITION_FIELD: &str = "partition";
/// Points per upsert request (Qdrant's gRPC message limit is 32 MB; 256 x 1536 floats is ~1.5 MB).
const UPSERT_BATCH: usize = 256;
const SCROLL_PAGE: u32 = 1024;

#[derive(Clone, Debug)]
pub struct QdrantSettings {
    pub url: String,
    /// Collection name prefix; the vector width is appended.
    pub collection_prefix: String,
    /// HNSW links per node inside each tenant's partition (`payload_m`); the global graph is off (`m = 0`)
    /// because every search is filtered to one partition, as Qdrant's multitenancy guide advises.
    pub max_connections: u64,
    pub ef_construction: u64,
}

pub struct QdrantIndex {
    client: Qdrant,
    settings: QdrantSettings,
    /// Collections known to exist (created on first use).
    ready: Mutex<HashSet<String>>,
    /// Partitions dropped by this process: retired for good (see [`VectorIndex::drop_partition`]).
    dropped: std::sync::Mutex<HashSet<String>>,
}

fn backend(e: impl std::fmt::Display) -> SearchError {
    SearchError::Backend(format!("qdrant: {e}"))
}

fn partition_prefix(name: &str) -> [u8; 8] {
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&digest.as_ref()[..8]);
    prefix
}

fn qdrant_id(partition: &str, id: PointId) -> QdrantPointId {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&partition_prefix(partition));
    bytes[8..].copy_from_slice(&id.0.to_be_bytes());
    let hex = hex::encode(bytes);
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    );
    QdrantPointId::from(uuid)
}

fn point_id_of(id: Option<&QdrantPointId>) -> Option<PointId> {
    match id?.point_id_options.as_ref()? {
        PointIdOptions::Uuid(uuid) => {
            let hex: String = uuid.chars().filter(|c| *c != '-').collect();
            let bytes = hex::decode(hex).ok()?;
            let last: [u8; 8] = bytes.get(8..16)?.try_into().ok()?;
            Some(PointId(u64::from_be_bytes(last)))
        }
        PointIdOptions::Num(_) => None,
    }
}

fn partition_filter(partition: &str) -> Filter {
    Filter::must([Condition::matches(PARTITION_FIELD, partition.to_owned())])
}

impl QdrantIndex {
    pub fn connect(settings: QdrantSettings) -> Result<QdrantIndex, SearchError> {
        let client = Qdrant::from_url(&settings.url).build().map_err(backend)?;
        Ok(QdrantIndex {
            client,
            settings,
            ready: Mutex::new(HashSet::new()),
            dropped: std::sync::Mutex::new(HashSet::new()),
        })
    }

    fn collection(&self, dimension: usize) -> String {
        format!("{}_d{dimension}", self.settings.collection_prefix)
    }

    /// The partition's collection, created (with the tenant field index) on first use.
    async fn ensure_collection(&self, partition: &Partition) -> Result<String, SearchError> {
        if self.is_dropped(&partition.name)? {
            return Err(SearchError::Dropped);
        }
        let name = self.collection(partition.dimension);
        let mut ready = self.ready.lock().await;
        if ready.contains(&name) {
            return Ok(name);
        }
        if !self
            .client
            .collection_exists(&name)
            .await
            .map_err(backend)?
        {
            self.client
                .create_collection(
                    CreateCollectionBuilder::new(&name)
                        .vectors_config(VectorParamsBuilder::new(
                            partition.dimension as u64,
                            Distance::Cosine,
                        ))
                        .hnsw_config(
                            HnswConfigDiffBuilder::default()
                                .m(0)
                                .payload_m(self.settings.max_connections)
                                .ef_construct(self.settings.ef_construction),
                        ),
                )
                .await
                .map_err(backend)?;
            self.client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(
                        &name,
                        PARTITION_FIELD,
                        FieldType::Keyword,
                    )
                    .field_index_params(KeywordIndexParamsBuilder::default().is_tenant(true))
                    .wait(true),
                )
                .await
                .map_err(backend)?;
        }
        ready.insert(name.clone());
        Ok(name)
    }

    /// Every live point of a partition with its vector.
    fn is_dropped(&self, partition_name: &str) -> Result<bool, SearchError> {
        Ok(self
            .dropped
            .lock()
            .map_err(|_| SearchError::Backend("qdrant: lock poisoned".into()))?
            .contains(partition_name))
    }

    /// Deletes every point of the partition, in every collection this prefix owns.
    async fn delete_partition_points(&self, partition_name: &str) -> Result<(), SearchError> {
        let collections = self.client.list_collections().await.map_err(backend)?;
        for collection in collections.collections {
            if !collection
                .name
                .starts_with(&self.settings.collection_prefix)
            {
                continue;
            }
            self.client
                .delete_points(
                    DeletePointsBuilder::new(&collection.name)
                        .points(partition_filter(partition_name))
                        .wait(true),
                )
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    async fn scroll_all(
        &self,
        collection: &str,
        partition: &str,
        with_vectors: bool,
    ) -> Result<Vec<(PointId, Vec<f32>)>, SearchError> {
        let mut out = Vec::new();
        let mut offset: Option<QdrantPointId> = None;
        loop {
            let mut request = ScrollPointsBuilder::new(collection)
                .filter(partition_filter(partition))
                .limit(SCROLL_PAGE)
                .with_vectors(with_vectors);
            if let Some(offset) = offset.take() {
                request = request.offset(offset);
            }
            let page = self.client.scroll(request).await.map_err(backend)?;
            for point in page.result {
                let Some(id) = point_id_of(point.id.as_ref()) else {
                    continue;
                };
                let vector = match point.vectors.as_ref().and_then(|v| v.get_vector()) {
                    Some(qdrant_client::qdrant::vector_output::Vector::Dense(dense)) => dense.data,
                    _ => Vec::new(),
                };
                out.push((id, vector));
            }
            match page.next_page_offset {
                Some(next) => offset = Some(next),
                None => return Ok(out),
            }
        }
    }
}

#[async_trait]
impl VectorIndex for QdrantIndex {
    async fn upsert(
        &self,
        partition: &Partition,
        points: Vec<IndexPoint>,
    ) -> Result<(), SearchError> {
        let collection = self.ensure_collection(partition).await?;
        for point in &points {
            if point.vector.len() != partition.dimension {
                return Err(SearchError::DimensionMismatch {
                    expected: partition.dimension,
                    got: point.vector.len(),
                });
            }
        }
        for batch in points.chunks(UPSERT_BATCH) {
            let structs: Vec<PointStruct> = batch
                .iter()
                .map(|p| {
                    let payload = Payload::from(std::collections::HashMap::from([(
                        PARTITION_FIELD.to_owned(),
                        qdrant_client::qdrant::Value::from(partition.name.clone()),
                    )]));
                    PointStruct::new(qdrant_id(&partition.name, p.id), p.vector.clone(), payload)
                })
                .collect();
            self.client
                .upsert_points(UpsertPointsBuilder::new(&collection, structs).wait(true))
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    async fn delete(&self, partition: &Partition, ids: &[PointId]) -> Result<(), SearchError> {
        if ids.is_empty() {
            return Ok(());
        }
        let collection = self.ensure_collection(partition).await?;
        let ids: Vec<QdrantPointId> = ids
            .iter()
            .map(|id| qdrant_id(&partition.name, *id))
            .collect();
        self.client
            .delete_points(
                DeletePointsBuilder::new(&collection)
                    .points(PointsIdsList::from(ids))
                    .wait(true),
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn search(
        &self,
        partition: &Partition,
        query: &VectorQuery,
    ) -> Result<Vec<ScoredPoint>, SearchError> {
        if query.vector.len() != partition.dimension {
            return Err(SearchError::DimensionMismatch {
                expected: partition.dimension,
                got: query.vector.len(),
            });
        }
        let collection = self.ensure_collection(partition).await?;
        let mut filter = partition_filter(&partition.name);
        if let Some(allow) = &query.allow {
            let ids: Vec<QdrantPointId> = allow
                .iter()
                .map(|id| qdrant_id(&partition.name, *id))
                .collect();
            filter.must.push(Condition::has_id(ids));
        }
        if let Some(deny) = query.deny.as_ref().filter(|d| !d.is_empty()) {
            let ids: Vec<QdrantPointId> = deny
                .iter()
                .map(|id| qdrant_id(&partition.name, *id))
                .collect();
            filter.must_not.push(Condition::has_id(ids));
        }
        let found = self
            .client
            .search_points(
                SearchPointsBuilder::new(&collection, query.vector.clone(), query.k as u64)
                    .filter(filter)
                    .params(SearchParamsBuilder::default().hnsw_ef(query.ef.max(query.k) as u64)),
            )
            .await
            .map_err(backend)?;
        Ok(found
            .result
            .into_iter()
            .filter_map(|p| point_id_of(p.id.as_ref()).map(|id| ScoredPoint { id, score: p.score }))
            // Defence in depth: never trust a result outside the filters.
            .filter(|p| query.permits(p.id))
            .collect())
    }

    async fn count(&self, partition: &Partition) -> Result<usize, SearchError> {
        let collection = self.ensure_collection(partition).await?;
        let counted = self
            .client
            .count(
                CountPointsBuilder::new(&collection)
                    .filter(partition_filter(&partition.name))
                    .exact(true),
            )
            .await
            .map_err(backend)?;
        Ok(counted.result.map(|r| r.count as usize).unwrap_or(0))
    }

    async fn point_ids(&self, partition: &Partition) -> Result<HashSet<PointId>, SearchError> {
        let collection = self.ensure_collection(partition).await?;
        Ok(self
            .scroll_all(&collection, &partition.name, false)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    async fn drop_partition(&self, partition_name: &str) -> Result<(), SearchError> {
        self.dropped
            .lock()
            .map_err(|_| SearchError::Backend("qdrant: lock poisoned".into()))?
            .insert(partition_name.to_owned());
        self.delete_partition_points(partition_name).await
    }

    async fn snapshot(&self, partition: &Partition, dir: &Path) -> Result<(), SearchError> {
        let collection = self.ensure_collection(partition).await?;
        let points = self.scroll_all(&collection, &partition.name, true).await?;
        std::fs::create_dir_all(dir)?;
        let lines: Vec<String> = points
            .iter()
            .map(|(id, v)| serde_json::json!({ "id": id.0, "vector": v }).to_string())
            .collect();
        std::fs::write(dir.join("points.jsonl"), lines.join("\n"))?;
        Ok(())
    }

    async fn restore(&self, partition: &Partition, dir: &Path) -> Result<(), SearchError> {
        let text = std::fs::read_to_string(dir.join("points.jsonl"))?;
        let mut points = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let value: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| SearchError::Corrupt(format!("snapshot line: {e}")))?;
            let id = value["id"]
                .as_u64()
                .ok_or_else(|| SearchError::Corrupt("snapshot point without id".into()))?;
            let vector: Vec<f32> = serde_json::from_value(value["vector"].clone())
                .map_err(|e| SearchError::Corrupt(format!("snapshot vector: {e}")))?;
            points.push(IndexPoint {
                id: PointId(id),
                vector,
            });
        }
        if self.is_dropped(&partition.name)? {
            return Err(SearchError::Dropped);
        }
        self.delete_partition_points(&partition.name).await?;
        self.upsert(partition, points).await
    }

    async fn flush(&self) -> Result<(), SearchError> {
        // Every write waited for Qdrant to apply it; Qdrant keeps its own WAL.
        Ok(())
    }

    async fn partitions(&self) -> Result<Vec<String>, SearchError> {
        // Listing distinct payload values is a full scan in Qdrant; orphan partitions there are removed by
        // `drop_partition` at tenant deletion instead of by the start-up sweep.
        Ok(Vec::new())
    }

    async fn check(&self) -> Result<(), SearchError> {
        self.client.health_check().await.map_err(backend)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_ids_round_trip_through_partition_scoped_uuids() {
        let id = PointId(0xdead_beef_0123_4567);
        let a = qdrant_id("pa", id);
        let b = qdrant_id("pb", id);
        assert_ne!(a, b, "the same point id in two partitions must not collide");
        assert_eq!(point_id_of(Some(&a)), Some(id));
        assert_eq!(point_id_of(Some(&b)), Some(id));
    }
}
