#![allow(clippy::expect_used, clippy::print_stdout)]
//! Recall@10 vs queries/s of ragvault's embedded index on the files `benches/ann/prepare_and_compare.py`
//! writes (Fashion-MNIST, ann-benchmarks' split, cosine ground truth). Queries run one at a time through the
//! `VectorIndex` trait, as retrieval calls it. Prints the same CSV as the Python side.
//!
//! `cargo run --release -p ragvault-benches --bin ann -- <dir> <M,M..> <ef,ef..> [dimension]` (see
//! benches/ann/run.sh; the dimension defaults to Fashion-MNIST's 784).
//!
//! Memory is what a restarted service holds for the partition: after the queries the index is flushed and a
//! child process (`ann --load <index dir> <dimension>`) loads it from disk and reports its resident-set growth,
//! so allocator leftovers of the build (freed input vectors) do not count.

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

/// Resident set size of this process in MB, from /proc (Linux).
fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn bench_partition(dim: usize) -> Partition {
    Partition {
        name: "pbench".into(),
        model_id: "ann-bench".into(),
        dimension: dim,
    }
}

/// Child mode: loads a flushed partition and prints `<resident MB> <load seconds> <points>`.
async fn load_only(index_dir: std::path::PathBuf, dim: usize) {
    let before = rss_mb();
    let started = Instant::now();
    let index = EmbeddedIndex::new(EmbeddedSettings::new(index_dir));
    let points = index.count(&bench_partition(dim)).await.expect("load");
    println!(
        "{:.0} {:.1} {points}",
        rss_mb() - before,
        started.elapsed().as_secs_f64()
    );
}

fn dir_mb(dir: &std::path::Path) -> f64 {
    let mut bytes = 0u64;
    for entry in walk(dir) {
        bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
    }
    bytes as f64 / 1e6
}

fn walk(dir: &std::path::Path) -> Vec<std::fs::DirEntry> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&entry.path()));
        } else {
            out.push(entry);
        }
    }
    out
}

fn settings_extend(build: &str) -> bool {
    build.contains("extend")
}

/// hnsw_rs alone, called directly on this thread with the same vectors, distance and parameters: what the
/// `VectorIndex` wrapper (blocking-pool hop, locks, over-fetch, filtering) adds is the difference.
fn raw_hnsw_rs(
    train: &[Vec<f32>],
    test: &[Vec<f32>],
    gt: &[u32],
    m: usize,
    efs: &[usize],
    extend: bool,
) {
    let normalise = |v: &[f32]| {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter().map(|x| x / norm).collect::<Vec<f32>>()
    };
    let data: Vec<Vec<f32>> = train.iter().map(|v| normalise(v)).collect();
    let queries: Vec<Vec<f32>> = test.iter().map(|v| normalise(v)).collect();
    let mut graph = hnsw_rs::hnsw::Hnsw::<f32, ragvault_search::DistUnitCosine>::new(
        m,
        data.len(),
        16,
        EF_CONSTRUCTION,
        ragvault_search::DistUnitCosine,
    );
    graph.set_extend_candidates(extend);
    let started = Instant::now();
    let refs: Vec<(&Vec<f32>, usize)> = data.iter().zip(0..).collect();
    graph.parallel_insert(&refs);
    let build_s = started.elapsed().as_secs_f64();
    for &ef in efs {
        let started = Instant::now();
        let mut hits = 0usize;
        for (q, query) in queries.iter().enumerate() {
            let truth = &gt[q * K..(q + 1) * K];
            hits += graph
                .search(query, K, ef.max(K))
                .iter()
                .filter(|n| truth.contains(&(n.d_id as u32)))
                .count();
        }
        let qps = queries.len() as f64 / started.elapsed().as_secs_f64();
        let recall = hits as f64 / (queries.len() * K) as f64;
        println!("hnsw_rs-direct,{m},{EF_CONSTRUCTION},{ef},{recall:.4},{qps:.0},{build_s:.1},");
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    if std::env::args().nth(1).as_deref() == Some("--load") {
        let _ = args.next();
        let dir = std::path::PathBuf::from(args.next().expect("index dir"));
        let dim = args.next().and_then(|d| d.parse().ok()).expect("dimension");
        return load_only(dir, dim).await;
    }
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
        // RAGVAULT_ANN_BUILD picks hnsw_rs's optional build heuristics: "extend" (the default setting),
        // "keep_pruned", both ("extend,keep_pruned") or "plain" (neither).
        let build = std::env::var("RAGVAULT_ANN_BUILD").unwrap_or_else(|_| "extend".to_owned());
        settings.extend_candidates = build.contains("extend");
        settings.keep_pruned = build.contains("keep_pruned");
        let label = format!("ragvault-hnsw_rs[{}]", build.replace(',', "+"));
        let index = EmbeddedIndex::new(settings);
        let partition = bench_partition(dim);
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
        if std::env::var_os("RAGVAULT_ANN_RAW").is_some() {
            raw_hnsw_rs(&train, &test, &gt, m, &efs, settings_extend(&build));
        }
        index.flush().await.expect("flush");
        let loaded = std::process::Command::new(std::env::current_exe().expect("own path"))
            .arg("--load")
            .arg(index_dir.path())
            .arg(dim.to_string())
            .output()
            .expect("load child");
        let loaded = String::from_utf8_lossy(&loaded.stdout).into_owned();
        let mut loaded = loaded.split_whitespace();
        let memory_mb = loaded.next().unwrap_or("?").to_owned();
        eprintln!(
            "# {label} M={m}: index files {:.0} MB, reloaded in {} s",
            dir_mb(index_dir.path()),
            loaded.next().unwrap_or("?")
        );
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
                            deny: None,
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
            println!(
                "{label},{m},{EF_CONSTRUCTION},{ef},{recall:.4},{qps:.0},{build_s:.1},{memory_mb}"
            );
        }
    }
}
