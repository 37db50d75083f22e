#![allow(clippy::expect_used, clippy::print_stdout)]
//! Recall@10 vs queries/s of ragvault's embedded index on the files `benches/ann/prepare_and_compare.py`
//! writes (Fashion-MNIST, ann-benchmarks' split, cosine ground truth). Queries run one at a time through the
//! `VectorIndex` trait, as retrieval calls it. Prints the same CSV as the Python side.
//!
//! `cargo run --release -p ragvault-benches --bin ann -- <dir> <M,M..> <ef,ef..> [dimension]` (see
//! benches/ann/run.sh; the dimension defaults to Fashion-MNIST's 784).

use ragvault_core::PointId;
use ragvault_search::{
    EmbeddedIndex, EmbeddedSettings, IndexPoint, Partition, VectorIndex, VectorQuery,
};
use std::time::Instant;

const K: usize = 10;
const EF_CONSTRUCTION: usize = 200;

fn read_f32(path: &std::path::Path, dim: usize) -> Vec<Vec<f32>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4 * dim)
        .map(|row| {
            row.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
        .collect()
}

fn list(arg: Option<String>, default: &str) -> Vec<usize> {
    arg.unwrap_or_else(|| default.to_owned())
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(
        args.next()
            .unwrap_or_else(|| "/var/tmp/ragvault-bench/ann".into()),
    );
    let ms = list(args.next(), "16");
    let efs = list(args.next(), "10,20,40,80,160,320");
    let dim: usize = args.next().and_then(|d| d.parse().ok()).unwrap_or(784);
    let train = read_f32(&dir.join("train.f32"), dim);
    let test = read_f32(&dir.join("test.f32"), dim);
    let gt: Vec<u32> = std::fs::read(dir.join("gt.u32"))
        .expect("gt.u32")
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    for m in ms {
        let index_dir = tempfile::tempdir().expect("temp dir");
        let mut settings = EmbeddedSettings::new(index_dir.path().to_owned());
        settings.max_connections = m;
        settings.ef_construction = EF_CONSTRUCTION;
        // RAGVAULT_ANN_BUILD=extend,keep_pruned turns on hnsw_rs's optional build heuristics.
        let build = std::env::var("RAGVAULT_ANN_BUILD").unwrap_or_default();
        settings.extend_candidates = build.contains("extend");
        settings.keep_pruned = build.contains("keep_pruned");
        let label = if build.is_empty() {
            "ragvault-hnsw_rs".to_owned()
        } else {
            format!("ragvault-hnsw_rs[{}]", build.replace(',', "+"))
        };
        let index = EmbeddedIndex::new(settings);
        let partition = Partition {
            name: "pbench".into(),
            model_id: "ann-bench".into(),
            dimension: dim,
        };
        let points: Vec<IndexPoint> = train
            .iter()
            .enumerate()
            .map(|(i, v)| IndexPoint {
                id: PointId(i as u64),
                vector: v.clone(),
            })
            .collect();
        let started = Instant::now();
        // One upsert: the embedded index inserts large batches in parallel, like an ingest of many chunks.
        index.upsert(&partition, points).await.expect("upsert");
        let build_s = started.elapsed().as_secs_f64();
        for &ef in &efs {
            let mut hits = 0usize;
            let started = Instant::now();
            for (q, query) in test.iter().enumerate() {
                let found = index
                    .search(
                        &partition,
                        &VectorQuery {
                            vector: query.clone(),
                            k: K,
                            ef,
                            allow: None,
                        },
                    )
                    .await
                    .expect("search");
                let truth = &gt[q * K..(q + 1) * K];
                hits += found
                    .iter()
                    .filter(|p| truth.contains(&(p.id.0 as u32)))
                    .count();
            }
            let qps = test.len() as f64 / started.elapsed().as_secs_f64();
            let recall = hits as f64 / (test.len() * K) as f64;
            println!("{label},{m},{EF_CONSTRUCTION},{ef},{recall:.4},{qps:.0},{build_s:.1}");
        }
    }
}
