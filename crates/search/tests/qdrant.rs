#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `VectorIndex` contract against a real Qdrant server. No Qdrant can be installed on the development and
//! CI machines, so these run only when `QDRANT_URL` is set (e.g. `QDRANT_URL=http://127.0.0.1:6334` with the
//! docker-compose Qdrant) and say so loudly when skipped.

use ragvault_core::PointId;
use ragvault_search::{
    IndexPoint, Partition, QdrantIndex, QdrantSettings, SearchError, VectorIndex, VectorQuery,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::HashSet;

const DIM: usize = 32;

fn index() -> Option<QdrantIndex> {
    let Ok(url) = std::env::var("QDRANT_URL") else {
        eprintln!("SKIPPED: QDRANT_URL is not set, so the Qdrant backend was NOT tested (see README: Qdrant)");
        return None;
    };
    let prefix = format!("ragvault_test_{}", rand::random::<u32>());
    Some(
        QdrantIndex::connect(QdrantSettings {
            url,
            collection_prefix: prefix,
            max_connections: 16,
            ef_construction: 100,
        })
        .unwrap(),
    )
}

fn partition(name: &str) -> Partition {
    Partition {
        name: name.to_owned(),
        model_id: "test".to_owned(),
        dimension: DIM,
    }
}

fn points(seed: u64, n: usize, first: u64) -> Vec<IndexPoint> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| IndexPoint {
            id: PointId(first + i as u64),
            vector: (0..DIM).map(|_| rng.gen_range(-1.0..1.0)).collect(),
        })
        .collect()
}

fn query(v: &[f32], k: usize) -> VectorQuery {
    VectorQuery {
        vector: v.to_vec(),
        k,
        ef: 64,
        allow: None,
        deny: None,
    }
}

#[tokio::test]
async fn qdrant_keeps_partitions_apart_deletes_filters_and_restores() {
    let Some(index) = index() else { return };
    index.check().await.unwrap();
    let (a, b) = (partition("pqa"), partition("pqb"));
    let pa = points(1, 200, 0);
    // The same point ids in another partition must not overwrite a's points.
    let pb = points(2, 200, 0);
    index.upsert(&a, pa.clone()).await.unwrap();
    index.upsert(&b, pb.clone()).await.unwrap();
    assert_eq!(index.count(&a).await.unwrap(), 200);
    assert_eq!(index.count(&b).await.unwrap(), 200);
    let found = index.search(&a, &query(&pa[5].vector, 3)).await.unwrap();
    assert_eq!(found[0].id, PointId(5));
    assert!((found[0].score - 1.0).abs() < 1e-3);
    let found = index.search(&b, &query(&pa[5].vector, 3)).await.unwrap();
    assert!(
        found.iter().all(|p| (p.score - 1.0).abs() > 1e-3),
        "b returned a's vector"
    );

    index.delete(&a, &[PointId(5)]).await.unwrap();
    let found = index.search(&a, &query(&pa[5].vector, 10)).await.unwrap();
    assert!(found.iter().all(|p| p.id != PointId(5)));
    assert_eq!(index.point_ids(&a).await.unwrap().len(), 199);

    let allow: HashSet<PointId> = [PointId(7), PointId(9)].into();
    let mut q = query(&pa[5].vector, 5);
    q.allow = Some(allow.clone());
    let found = index.search(&a, &q).await.unwrap();
    assert_eq!(found.len(), 2);
    assert!(found.iter().all(|p| allow.contains(&p.id)));
    let deny: HashSet<PointId> = pa.iter().take(100).map(|p| p.id).collect();
    let mut q = query(&pa[5].vector, 5);
    q.deny = Some(deny.clone());
    let found = index.search(&a, &q).await.unwrap();
    assert_eq!(found.len(), 5);
    assert!(found.iter().all(|p| !deny.contains(&p.id)));

    let snap = tempfile::tempdir().unwrap();
    index.snapshot(&a, snap.path()).await.unwrap();
    index.drop_partition("pqa").await.unwrap();
    assert!(matches!(index.count(&a).await, Err(SearchError::Dropped)));
    assert!(matches!(
        index.upsert(&a, pa.clone()).await,
        Err(SearchError::Dropped)
    ));
    assert_eq!(index.count(&b).await.unwrap(), 200);
    let c = partition("pqc");
    index.restore(&c, snap.path()).await.unwrap();
    assert_eq!(index.count(&c).await.unwrap(), 199);
    index.drop_partition("pqc").await.unwrap();
}
