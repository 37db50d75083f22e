//! The embedded vector index: one hnsw_rs graph per partition, on local disk.
//!
//! Files per partition (`<dir>/<partition name>/`):
//! - `manifest.json`: model id, dimension, graph parameters, the current dump generation, SHA-256 of the
//!   dump files, and the tombstones at dump time;
//! - `g<generation>.hnsw.graph` / `.hnsw.data`: the hnswio dump;
//! - `wal.log`: upserts and deletes since that dump (see [`crate::wal`]).
//!
//! A dump happens on a schedule and at shutdown ([`VectorIndex::flush`]); every write is in the WAL before
//! the call returns, so a crash between dumps loses nothing. hnsw_rs cannot delete, so deleted points
//! become tombstones, filtered out at search time with over-fetch; past a threshold the partition is rebuilt
//! from its live points in the background. Files that fail their checksum or do not load are moved aside and
//! the partition starts empty, for the caller to refill from Postgres (never a panic).

use crate::distance::DistUnitCosine;
use crate::wal::{Wal, WalRecord};
use crate::{IndexPoint, Partition, ScoredPoint, SearchError, VectorIndex, VectorQuery};
use async_trait::async_trait;
use hnsw_rs::api::AnnT;
use hnsw_rs::hnsw::Hnsw;
use hnsw_rs::hnswio::HnswIo;
use ragvault_core::PointId;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

type Graph = Hnsw<'static, f32, DistUnitCosine>;

const MANIFEST: &str = "manifest.json";
const WAL_FILE: &str = "wal.log";
const FORMAT_VERSION: u32 = 1;
/// hnsw_rs caps the number of layers at 16.
const MAX_LAYERS: usize = 16;

/// Tuning of the embedded index (config section `[index]`).
#[derive(Clone, Debug)]
pub struct EmbeddedSettings {
    /// Where partitions live (`<data_dir>/index` by default).
    pub dir: PathBuf,
    /// Links per node (HNSW `M`).
    pub max_connections: usize,
    pub ef_construction: usize,
    /// Rebuild a partition when tombstones pass this share of its graph nodes...
    pub rebuild_tombstone_ratio: f64,
    /// ...and there are at least this many.
    pub rebuild_min_tombstones: usize,
    /// hnsw_rs build option: also consider the candidates' neighbours when choosing a new node's links. On
    /// near-duplicate text (manuals) it lifts recall@10 at ef 10 from 0.91 to 0.97 for about 10 % more build
    /// time (docs/performance.md), so it is on by default.
    pub extend_candidates: bool,
    /// hnsw_rs build option: fill a node's link list with pruned candidates. Measured harmful (recall@10 0.53
    /// on the same data): off, kept only so the benchmark can show it.
    pub keep_pruned: bool,
}

impl EmbeddedSettings {
    pub fn new(dir: PathBuf) -> EmbeddedSettings {
        EmbeddedSettings {
            dir,
            max_connections: 16,
            ef_construction: 200,
            rebuild_tombstone_ratio: 0.2,
            rebuild_min_tombstones: 64,
            extend_candidates: true,
            keep_pruned: false,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: u32,
    model_id: String,
    dimension: usize,
    max_connections: usize,
    ef_construction: usize,
    generation: u64,
    /// hnswio basename of the dump; none while the partition had no points at dump time.
    basename: Option<String>,
    graph_sha256: Option<String>,
    data_sha256: Option<String>,
    tombstones: Vec<u64>,
}

struct GraphState {
    graph: Graph,
    /// Graph nodes, including tombstoned ones and repair duplicates.
    nodes: usize,
    live: HashSet<u64>,
    /// Ids whose node is still in the graph but which were deleted.
    tombstones: HashSet<u64>,
}

struct Writer {
    wal: Wal,
    generation: u64,
    dirty: bool,
}

struct PartitionIndex {
    dir: PathBuf,
    model_id: String,
    dimension: usize,
    max_connections: usize,
    ef_construction: usize,
    build: BuildOptions,
    state: RwLock<GraphState>,
    /// Held for every write and every dump, so the WAL and the dump always agree. Searches do not take it.
    writer: Mutex<Writer>,
    rebuilding: AtomicBool,
}

struct Inner {
    settings: EmbeddedSettings,
    partitions: Mutex<HashMap<String, Arc<PartitionIndex>>>,
    /// Partitions dropped since start. A task that derived the name before the drop (a start-up
    /// reconciliation, a late ingest job) must not bring the directory back; guarded by `partitions`' lock.
    dropped: Mutex<HashSet<String>>,
}

/// The embedded default backend of [`VectorIndex`].
#[derive(Clone)]
pub struct EmbeddedIndex {
    inner: Arc<Inner>,
}

fn lock_poisoned() -> SearchError {
    SearchError::Backend("index lock poisoned by an earlier panic".into())
}

fn to_data_id(id: PointId) -> usize {
    // Point ids are 64-bit; ragvault only builds for 64-bit targets (see the assertion below).
    id.0 as usize
}
const _: () = assert!(std::mem::size_of::<usize>() == 8);

/// Build options that are not part of the saved graph (they only change how new nodes are linked).
#[derive(Clone, Copy, Debug, Default)]
struct BuildOptions {
    extend_candidates: bool,
    keep_pruned: bool,
}

impl BuildOptions {
    fn apply(self, mut graph: Graph) -> Graph {
        graph.set_extend_candidates(self.extend_candidates);
        graph.set_keeping_pruned(self.keep_pruned);
        graph
    }
}

fn new_graph(
    max_connections: usize,
    ef_construction: usize,
    capacity: usize,
    options: BuildOptions,
) -> Graph {
    options.apply(Hnsw::new(
        max_connections,
        capacity.max(1024),
        MAX_LAYERS,
        ef_construction,
        DistUnitCosine,
    ))
}

/// Every node of a graph. (hnsw_rs's own iterator panics on an empty graph.)
fn graph_points(
    graph: &Graph,
) -> impl Iterator<Item = Arc<hnsw_rs::hnsw::Point<'static, f32>>> + '_ {
    let nonempty = graph.get_nb_point() > 0;
    nonempty
        .then(|| graph.get_point_indexation().into_iter())
        .into_iter()
        .flatten()
}

fn sha256_file(path: &Path) -> Result<String, SearchError> {
    let bytes = std::fs::read(path)?;
    Ok(hex::encode(
        ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref(),
    ))
}

fn graph_files(dir: &Path, basename: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{basename}.hnsw.graph")),
        dir.join(format!("{basename}.hnsw.data")),
    )
}

/// Writes a file atomically: a temporary file, synced, then renamed over the old one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SearchError> {
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panic".to_owned())
}

impl PartitionIndex {
    /// Opens a partition directory, or creates it. Checksums, hnswio and the WAL are all checked; any
    /// failure is `Corrupt`.
    fn open(
        dir: PathBuf,
        spec: &Partition,
        settings: &EmbeddedSettings,
    ) -> Result<PartitionIndex, SearchError> {
        std::fs::create_dir_all(&dir)?;
        let manifest_path = dir.join(MANIFEST);
        let manifest: Manifest = match std::fs::read(&manifest_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| SearchError::Corrupt(format!("manifest: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let manifest = Manifest {
                    format: FORMAT_VERSION,
                    model_id: spec.model_id.clone(),
                    dimension: spec.dimension,
                    max_connections: settings.max_connections,
                    ef_construction: settings.ef_construction,
                    generation: 0,
                    basename: None,
                    graph_sha256: None,
                    data_sha256: None,
                    tombstones: Vec::new(),
                };
                let json = serde_json::to_vec_pretty(&manifest)
                    .map_err(|e| SearchError::Backend(e.to_string()))?;
                write_atomically(&manifest_path, &json)?;
                manifest
            }
            Err(e) => return Err(e.into()),
        };
        if manifest.format != FORMAT_VERSION {
            return Err(SearchError::Corrupt(format!(
                "unknown index format {}",
                manifest.format
            )));
        }
        if manifest.model_id != spec.model_id || manifest.dimension != spec.dimension {
            return Err(SearchError::ModelMismatch {
                built_with: format!("{} ({}d)", manifest.model_id, manifest.dimension),
                asked: format!("{} ({}d)", spec.model_id, spec.dimension),
            });
        }
        let build = BuildOptions {
            extend_candidates: settings.extend_candidates,
            keep_pruned: settings.keep_pruned,
        };
        let graph = match &manifest.basename {
            None => new_graph(manifest.max_connections, manifest.ef_construction, 0, build),
            Some(basename) => build.apply(load_dump(&dir, basename, &manifest)?),
        };
        let mut nodes = 0;
        let mut live = HashSet::new();
        for point in graph_points(&graph) {
            nodes += 1;
            live.insert(point.get_origin_id());
        }
        let tombstones: HashSet<u64> = manifest.tombstones.iter().copied().collect();
        live.retain(|id| !tombstones.contains(&(*id as u64)));
        let mut state = GraphState {
            graph,
            nodes,
            live: live.into_iter().map(|id| id as u64).collect(),
            tombstones,
        };
        let wal_path = dir.join(WAL_FILE);
        let replay = Wal::replay(&wal_path)?;
        let replayed = replay.len();
        for record in replay {
            match record {
                WalRecord::Upsert(id, vector) => {
                    if vector.len() != spec.dimension {
                        return Err(SearchError::Corrupt(
                            "write-ahead record of another dimension".into(),
                        ));
                    }
                    apply_upserts(&mut state, vec![IndexPoint { id, vector }]);
                }
                WalRecord::Delete(id) => apply_delete(&mut state, id),
            }
        }
        if replayed > 0 {
            tracing::info!(
                partition = %spec.name,
                records = replayed,
                "replayed the index write-ahead record"
            );
        }
        Ok(PartitionIndex {
            dir,
            model_id: manifest.model_id,
            dimension: manifest.dimension,
            max_connections: manifest.max_connections,
            ef_construction: manifest.ef_construction,
            build,
            state: RwLock::new(state),
            writer: Mutex::new(Writer {
                wal: Wal::open(&wal_path)?,
                generation: manifest.generation,
                dirty: replayed > 0,
            }),
            rebuilding: AtomicBool::new(false),
        })
    }

    fn check_dimension(&self, vector: &[f32]) -> Result<(), SearchError> {
        if vector.len() == self.dimension {
            Ok(())
        } else {
            Err(SearchError::DimensionMismatch {
                expected: self.dimension,
                got: vector.len(),
            })
        }
    }

    fn upsert(&self, mut points: Vec<IndexPoint>) -> Result<(), SearchError> {
        for point in &mut points {
            self.check_dimension(&point.vector)?;
            crate::normalize(&mut point.vector);
        }
        let mut writer = self.writer.lock().map_err(|_| lock_poisoned())?;
        {
            let state = self.state.read().map_err(|_| lock_poisoned())?;
            points.retain(|p| !state.live.contains(&p.id.0));
        }
        if points.is_empty() {
            return Ok(());
        }
        let records: Vec<WalRecord> = points
            .iter()
            .map(|p| WalRecord::Upsert(p.id, p.vector.clone()))
            .collect();
        writer.wal.append(&records)?;
        let mut state = self.state.write().map_err(|_| lock_poisoned())?;
        apply_upserts(&mut state, points);
        writer.dirty = true;
        Ok(())
    }

    /// Deletes points; returns whether the partition now wants a rebuild.
    fn delete(&self, ids: &[PointId], settings: &EmbeddedSettings) -> Result<bool, SearchError> {
        let mut writer = self.writer.lock().map_err(|_| lock_poisoned())?;
        let present: Vec<PointId> = {
            let state = self.state.read().map_err(|_| lock_poisoned())?;
            ids.iter()
                .copied()
                .filter(|id| state.live.contains(&id.0))
                .collect()
        };
        if present.is_empty() {
            return Ok(false);
        }
        let records: Vec<WalRecord> = present.iter().map(|id| WalRecord::Delete(*id)).collect();
        writer.wal.append(&records)?;
        let mut state = self.state.write().map_err(|_| lock_poisoned())?;
        for id in present {
            apply_delete(&mut state, id);
        }
        writer.dirty = true;
        let tombstones = state.tombstones.len();
        Ok(tombstones >= settings.rebuild_min_tombstones
            && tombstones as f64 > settings.rebuild_tombstone_ratio * state.nodes as f64)
    }

    fn search(&self, query: &VectorQuery) -> Result<Vec<ScoredPoint>, SearchError> {
        self.check_dimension(&query.vector)?;
        let mut vector = query.vector.clone();
        crate::normalize(&mut vector);
        let state = self.state.read().map_err(|_| lock_poisoned())?;
        let k = query.k.min(state.live.len());
        if k == 0 {
            return Ok(Vec::new());
        }
        let allowed = |id: u64| state.live.contains(&id) && query.permits(PointId(id));
        // A very selective filter: scoring the allowed points directly is exact and cheaper than making the
        // graph walk past almost everything.
        if let Some(allow) = &query.allow {
            if allow.len().saturating_mul(20) < state.live.len() {
                let mut scored: Vec<ScoredPoint> = Vec::new();
                let mut seen = HashSet::new();
                for point in graph_points(&state.graph) {
                    let id = point.get_origin_id() as u64;
                    if allowed(id) && seen.insert(id) {
                        scored.push(ScoredPoint {
                            id: PointId(id),
                            score: 1.0 - DistUnitCosine.distance(&vector, point.get_v()),
                        });
                    }
                }
                scored.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
                scored.truncate(k);
                return Ok(scored);
            }
        }
        // Over-fetch past tombstones, repair duplicates and filtered-out points until k survive. The graph
        // is walked unfiltered: hnsw_rs's `search_filter` can return points its filter rejected (upstream
        // issue 27) and, in our tests, missed points a plain search finds, so filtering happens here.
        let mut fetch = k + state.tombstones.len().min(k * 4);
        loop {
            let ef = query.ef.max(fetch);
            let found = state.graph.search(&vector, fetch, ef);
            let mut seen = HashSet::new();
            let results: Vec<ScoredPoint> = found
                .into_iter()
                .filter(|n| allowed(n.d_id as u64) && seen.insert(n.d_id))
                .map(|n| ScoredPoint {
                    id: PointId(n.d_id as u64),
                    score: 1.0 - n.distance,
                })
                .take(k)
                .collect();
            if results.len() >= k || fetch >= state.nodes {
                return Ok(results);
            }
            fetch = (fetch * 2).min(state.nodes);
        }
    }

    /// Dumps the graph as a new generation when anything changed since the last dump, then empties the WAL.
    fn dump(&self) -> Result<(), SearchError> {
        let mut writer = self.writer.lock().map_err(|_| lock_poisoned())?;
        if !writer.dirty {
            return Ok(());
        }
        self.dump_locked(&mut writer)
    }

    fn dump_locked(&self, writer: &mut Writer) -> Result<(), SearchError> {
        let state = self.state.read().map_err(|_| lock_poisoned())?;
        let generation = writer.generation + 1;
        let (basename, graph_sha256, data_sha256) = if state.nodes == 0 {
            (None, None, None)
        } else {
            let wanted = format!("g{generation}");
            let dir = self.dir.clone();
            let graph = &state.graph;
            // hnswio panics on i/o errors; a failed dump must not take the process down.
            let basename =
                std::panic::catch_unwind(AssertUnwindSafe(|| graph.file_dump(&dir, &wanted)))
                    .map_err(|p| {
                        SearchError::Backend(format!("dump failed: {}", panic_message(p)))
                    })?
                    .map_err(|e| SearchError::Backend(format!("dump failed: {e}")))?;
            let (graph_file, data_file) = graph_files(&self.dir, &basename);
            (
                Some(basename),
                Some(sha256_file(&graph_file)?),
                Some(sha256_file(&data_file)?),
            )
        };
        let manifest = Manifest {
            format: FORMAT_VERSION,
            model_id: self.model_id.clone(),
            dimension: self.dimension,
            max_connections: self.max_connections,
            ef_construction: self.ef_construction,
            generation,
            basename: basename.clone(),
            graph_sha256,
            data_sha256,
            tombstones: state.tombstones.iter().copied().collect(),
        };
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| SearchError::Backend(e.to_string()))?;
        write_atomically(&self.dir.join(MANIFEST), &json)?;
        // The manifest now names the new dump: the WAL is redundant, and so are older dump files.
        writer.wal.reset()?;
        writer.generation = generation;
        writer.dirty = false;
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_dump = name.ends_with(".hnsw.graph") || name.ends_with(".hnsw.data");
            let current = basename
                .as_ref()
                .is_some_and(|b| name.starts_with(&format!("{b}.hnsw")));
            if is_dump && !current {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// Rebuilds the graph from live points only (dropping tombstones and duplicates), then dumps it.
    /// Writes wait meanwhile; searches keep using the old graph until the swap.
    fn rebuild(&self) -> Result<usize, SearchError> {
        let mut writer = self.writer.lock().map_err(|_| lock_poisoned())?;
        let (graph, live) = {
            let state = self.state.read().map_err(|_| lock_poisoned())?;
            let mut seen = HashSet::new();
            let mut points: Vec<(Vec<f32>, usize)> = Vec::with_capacity(state.live.len());
            for point in graph_points(&state.graph) {
                let id = point.get_origin_id();
                if state.live.contains(&(id as u64)) && seen.insert(id) {
                    points.push((point.get_v().to_vec(), id));
                }
            }
            let graph = new_graph(
                self.max_connections,
                self.ef_construction,
                points.len(),
                self.build,
            );
            let refs: Vec<(&Vec<f32>, usize)> = points.iter().map(|(v, id)| (v, *id)).collect();
            graph.parallel_insert(&refs);
            (graph, state.live.clone())
        };
        {
            let mut state = self.state.write().map_err(|_| lock_poisoned())?;
            state.nodes = live.len();
            state.graph = graph;
            state.tombstones.clear();
        }
        self.dump_locked(&mut writer)?;
        Ok(live.len())
    }

    /// Searches every live point by its own vector and re-inserts those the graph cannot reach (hnsw_rs
    /// upstream issues 32 and 37). Returns how many were repaired.
    fn repair_unreachable(&self, ef: usize) -> Result<usize, SearchError> {
        let _writer = self.writer.lock().map_err(|_| lock_poisoned())?;
        let unreachable: Vec<(usize, Vec<f32>)> = {
            let state = self.state.read().map_err(|_| lock_poisoned())?;
            let mut seen = HashSet::new();
            let mut missing = Vec::new();
            for point in graph_points(&state.graph) {
                let id = point.get_origin_id();
                if !state.live.contains(&(id as u64)) || !seen.insert(id) {
                    continue;
                }
                let found = state.graph.search(point.get_v(), 10, ef.max(10));
                // Exact duplicates can fill the top 10 at distance 0 without being this point: a tie
                // is not unreachability.
                let tied = found.len() == 10 && found.iter().all(|n| n.distance <= 1e-6);
                if !tied && !found.iter().any(|n| n.d_id == id) {
                    missing.push((id, point.get_v().to_vec()));
                }
            }
            missing
        };
        if !unreachable.is_empty() {
            let mut state = self.state.write().map_err(|_| lock_poisoned())?;
            for (id, vector) in &unreachable {
                state.graph.insert((vector.as_slice(), *id));
                state.nodes += 1;
            }
        }
        Ok(unreachable.len())
    }
}

trait DistanceExt {
    fn distance(&self, a: &[f32], b: &[f32]) -> f32;
}

impl DistanceExt for DistUnitCosine {
    fn distance(&self, a: &[f32], b: &[f32]) -> f32 {
        hnsw_rs::anndists::dist::Distance::eval(self, a, b)
    }
}

fn apply_upserts(state: &mut GraphState, points: Vec<IndexPoint>) {
    let mut fresh: Vec<(Vec<f32>, usize)> = Vec::new();
    for point in points {
        if state.live.contains(&point.id.0) {
            continue;
        }
        state.live.insert(point.id.0);
        // A tombstoned id coming back has the same vector (ids are immutable): its node is still there.
        if !state.tombstones.remove(&point.id.0) {
            fresh.push((point.vector, to_data_id(point.id)));
        }
    }
    state.nodes += fresh.len();
    if fresh.len() >= 256 {
        let refs: Vec<(&Vec<f32>, usize)> = fresh.iter().map(|(v, id)| (v, *id)).collect();
        state.graph.parallel_insert(&refs);
    } else {
        for (vector, id) in &fresh {
            state.graph.insert((vector.as_slice(), *id));
        }
    }
}

fn apply_delete(state: &mut GraphState, id: PointId) {
    if state.live.remove(&id.0) {
        state.tombstones.insert(id.0);
    }
}

/// Loads an hnswio dump after checking it against the manifest's checksums.
fn load_dump(dir: &Path, basename: &str, manifest: &Manifest) -> Result<Graph, SearchError> {
    let (graph_file, data_file) = graph_files(dir, basename);
    for (file, expected) in [
        (&graph_file, &manifest.graph_sha256),
        (&data_file, &manifest.data_sha256),
    ] {
        let actual = sha256_file(file)
            .map_err(|e| SearchError::Corrupt(format!("{}: {e}", file.display())))?;
        if Some(&actual) != expected.as_ref() {
            return Err(SearchError::Corrupt(format!(
                "{} does not match its checksum",
                file.display()
            )));
        }
    }
    // hnswio ties the graph's lifetime to its reader. Without mmap the reader holds nothing but paths and
    // options once loading is done, so it is leaked (a few hundred bytes per load) to get a 'static graph.
    // hnswio asserts on malformed input; a damaged file must become an error, not a crash.
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        let reader: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, basename)));
        reader.load_hnsw::<f32, DistUnitCosine>()
    }))
    .map_err(|p| SearchError::Corrupt(format!("graph did not load: {}", panic_message(p))))?
    .map_err(|e| SearchError::Corrupt(format!("graph did not load: {e}")))
}

impl EmbeddedIndex {
    pub fn new(settings: EmbeddedSettings) -> EmbeddedIndex {
        EmbeddedIndex {
            inner: Arc::new(Inner {
                settings,
                partitions: Mutex::new(HashMap::new()),
                dropped: Mutex::new(HashSet::new()),
            }),
        }
    }

    pub fn settings(&self) -> &EmbeddedSettings {
        &self.inner.settings
    }

    /// Partition names with files on disk.
    pub fn partitions_on_disk(&self) -> Result<Vec<String>, SearchError> {
        let mut names = Vec::new();
        match std::fs::read_dir(&self.inner.settings.dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if entry.path().join(MANIFEST).exists() && !name.contains('.') {
                        names.push(name);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        names.sort();
        Ok(names)
    }

    /// Rebuilds a partition from its live points now (normally triggered by tombstones).
    pub async fn rebuild(&self, partition: &Partition) -> Result<usize, SearchError> {
        let inner = self.inner.clone();
        let partition = partition.clone();
        blocking(move || inner.partition(&partition)?.rebuild()).await
    }

    /// Finds points the graph cannot reach by their own vector and re-inserts them.
    pub async fn repair_unreachable(&self, partition: &Partition) -> Result<usize, SearchError> {
        let inner = self.inner.clone();
        let partition = partition.clone();
        blocking(move || inner.partition(&partition)?.repair_unreachable(200)).await
    }

    /// Tombstones currently held by a partition (for tests and metrics).
    pub async fn tombstones(&self, partition: &Partition) -> Result<usize, SearchError> {
        let inner = self.inner.clone();
        let partition = partition.clone();
        blocking(move || {
            let index = inner.partition(&partition)?;
            let state = index.state.read().map_err(|_| lock_poisoned())?;
            Ok(state.tombstones.len())
        })
        .await
    }
}

impl Inner {
    /// `Dropped` for a retired partition name (callers hold the `partitions` lock).
    fn refuse_dropped(&self, name: &str) -> Result<(), SearchError> {
        if self
            .dropped
            .lock()
            .map_err(|_| lock_poisoned())?
            .contains(name)
        {
            return Err(SearchError::Dropped);
        }
        Ok(())
    }

    /// The open partition, loading it from disk on first use. Unusable files are moved aside and the
    /// partition starts empty (a model mismatch is not corruption and is returned as an error).
    fn partition(&self, spec: &Partition) -> Result<Arc<PartitionIndex>, SearchError> {
        let mut partitions = self.partitions.lock().map_err(|_| lock_poisoned())?;
        if let Some(index) = partitions.get(&spec.name) {
            if index.model_id != spec.model_id || index.dimension != spec.dimension {
                return Err(SearchError::ModelMismatch {
                    built_with: format!("{} ({}d)", index.model_id, index.dimension),
                    asked: format!("{} ({}d)", spec.model_id, spec.dimension),
                });
            }
            return Ok(index.clone());
        }
        self.refuse_dropped(&spec.name)?;
        if spec.name.is_empty() || !spec.name.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(SearchError::Backend("invalid partition name".into()));
        }
        let dir = self.settings.dir.join(&spec.name);
        let index = match PartitionIndex::open(dir.clone(), spec, &self.settings) {
            Ok(index) => index,
            Err(SearchError::Corrupt(why)) => {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let aside = (0..)
                    .map(|n| {
                        self.settings
                            .dir
                            .join(format!("{}.corrupt-{stamp}-{n}", spec.name))
                    })
                    .find(|path| !path.exists())
                    .unwrap_or_else(|| self.settings.dir.join(format!("{}.corrupt", spec.name)));
                tracing::error!(
                    partition = %spec.name,
                    reason = %why,
                    moved_to = %aside.display(),
                    "index partition files are unusable; starting it empty to be refilled from Postgres"
                );
                std::fs::rename(&dir, &aside)?;
                PartitionIndex::open(dir, spec, &self.settings)?
            }
            Err(e) => return Err(e),
        };
        let index = Arc::new(index);
        partitions.insert(spec.name.clone(), index.clone());
        Ok(index)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SearchError> + Send + 'static,
) -> Result<T, SearchError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SearchError::Backend(format!("index task failed: {e}")))?
}

fn copy_dir_files(from: &Path, to: &Path) -> Result<(), SearchError> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)?.flatten() {
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

#[async_trait]
impl VectorIndex for EmbeddedIndex {
    async fn upsert(
        &self,
        partition: &Partition,
        points: Vec<IndexPoint>,
    ) -> Result<(), SearchError> {
        let inner = self.inner.clone();
        let partition = partition.clone();
        blocking(move || inner.partition(&partition)?.upsert(points)).await
    }

    async fn delete(&self, partition: &Partition, ids: &[PointId]) -> Result<(), SearchError> {
        let inner = self.inner.clone();
        let spec = partition.clone();
        let ids = ids.to_vec();
        let wants_rebuild =
            blocking(move || inner.partition(&spec)?.delete(&ids, &inner.settings)).await?;
        if wants_rebuild {
            let inner = self.inner.clone();
            let spec = partition.clone();
            tokio::task::spawn_blocking(move || {
                let Ok(index) = inner.partition(&spec) else {
                    return;
                };
                if index.rebuilding.swap(true, Ordering::SeqCst) {
                    return;
                }
                match index.rebuild() {
                    Ok(live) => {
                        tracing::info!(partition = %spec.name, live, "index partition rebuilt")
                    }
                    Err(e) => {
                        tracing::warn!(partition = %spec.name, error = %e, "index rebuild failed")
                    }
                }
                index.rebuilding.store(false, Ordering::SeqCst);
            });
        }
        Ok(())
    }

    async fn search(
        &self,
        partition: &Partition,
        query: &VectorQuery,
    ) -> Result<Vec<ScoredPoint>, SearchError> {
        let inner = self.inner.clone();
        let partition = partition.clone();
        let query = query.clone();
        blocking(move || inner.partition(&partition)?.search(&query)).await
    }

    fn loaded_size(&self) -> Option<(usize, usize)> {
        let partitions = self.inner.partitions.lock().ok()?;
        let points = partitions
            .values()
            .filter_map(|p| p.state.read().ok().map(|s| s.live.len()))
            .sum();
        Some((partitions.len(), points))
    }

    async fn count(&self, partition: &Partition) -> Result<usize, SearchError> {
        Ok(self.point_ids(partition).await?.len())
    }

    async fn point_ids(&self, partition: &Partition) -> Result<HashSet<PointId>, SearchError> {
        let inner = self.inner.clone();
        let partition = partition.clone();
        blocking(move || {
            let index = inner.partition(&partition)?;
            let state = index.state.read().map_err(|_| lock_poisoned())?;
            Ok(state.live.iter().map(|id| PointId(*id)).collect())
        })
        .await
    }

    async fn drop_partition(&self, partition_name: &str) -> Result<(), SearchError> {
        let inner = self.inner.clone();
        let name = partition_name.to_owned();
        blocking(move || {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(SearchError::Backend("invalid partition name".into()));
            }
            let removed = {
                let mut partitions = inner.partitions.lock().map_err(|_| lock_poisoned())?;
                inner
                    .dropped
                    .lock()
                    .map_err(|_| lock_poisoned())?
                    .insert(name.clone());
                partitions.remove(&name)
            };
            // Wait for writers of the partition to finish before its files go.
            let _writer = match &removed {
                Some(index) => Some(index.writer.lock().map_err(|_| lock_poisoned())?),
                None => None,
            };
            // The partition and any copies of it set aside as damaged or mid-restore.
            let entries = match std::fs::read_dir(&inner.settings.dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            let prefix = format!("{name}.");
            for entry in entries.flatten() {
                let file_name = entry.file_name().to_string_lossy().into_owned();
                if file_name == name || file_name.starts_with(&prefix) {
                    std::fs::remove_dir_all(entry.path())?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn snapshot(&self, partition: &Partition, dir: &Path) -> Result<(), SearchError> {
        let inner = self.inner.clone();
        let partition = partition.clone();
        let target = dir.to_owned();
        blocking(move || {
            let index = inner.partition(&partition)?;
            let mut writer = index.writer.lock().map_err(|_| lock_poisoned())?;
            if writer.dirty {
                index.dump_locked(&mut writer)?;
            }
            // The writer lock is held, so the manifest and dump files copied belong together.
            copy_dir_files(&index.dir, &target)
        })
        .await
    }

    async fn restore(&self, partition: &Partition, dir: &Path) -> Result<(), SearchError> {
        let inner = self.inner.clone();
        let spec = partition.clone();
        let source = dir.to_owned();
        blocking(move || {
            let mut partitions = inner.partitions.lock().map_err(|_| lock_poisoned())?;
            inner.refuse_dropped(&spec.name)?;
            let target = inner.settings.dir.join(&spec.name);
            let staging = inner.settings.dir.join(format!("{}.restoring", spec.name));
            let _ = std::fs::remove_dir_all(&staging);
            copy_dir_files(&source, &staging)?;
            let _ = std::fs::remove_file(staging.join(WAL_FILE));
            // Check the copy before it replaces anything.
            let restored = PartitionIndex::open(staging.clone(), &spec, &inner.settings)?;
            drop(restored);
            if let Some(old) = partitions.remove(&spec.name) {
                let _writer = old.writer.lock().map_err(|_| lock_poisoned())?;
            }
            let _ = std::fs::remove_dir_all(&target);
            std::fs::rename(&staging, &target)?;
            let index = PartitionIndex::open(target, &spec, &inner.settings)?;
            partitions.insert(spec.name.clone(), Arc::new(index));
            Ok(())
        })
        .await
    }

    async fn partitions(&self) -> Result<Vec<String>, SearchError> {
        let index = self.clone();
        blocking(move || index.partitions_on_disk()).await
    }

    async fn check(&self) -> Result<(), SearchError> {
        let dir = self.inner.settings.dir.clone();
        blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let probe = dir.join(".ready-probe");
            std::fs::write(&probe, b"ok")?;
            std::fs::remove_file(&probe)?;
            Ok(())
        })
        .await
    }

    async fn flush(&self) -> Result<(), SearchError> {
        let inner = self.inner.clone();
        blocking(move || {
            let partitions: Vec<Arc<PartitionIndex>> = inner
                .partitions
                .lock()
                .map_err(|_| lock_poisoned())?
                .values()
                .cloned()
                .collect();
            for index in partitions {
                index.dump()?;
            }
            Ok(())
        })
        .await
    }
}
