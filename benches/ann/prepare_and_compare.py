"""ANN comparison on the same data for every library: brute-force cosine top-10 ground truth, then hnswlib and
faiss-cpu (HNSW flat) on the same M / ef grid, single-threaded queries.

  prepare_and_compare.py <out dir> <M,..> <ef,..>                          Fashion-MNIST (ann-benchmarks split:
                                                                            60k train, 10k test, 784-d)
  prepare_and_compare.py <out dir> <M,..> <ef,..> <vectors.f32> <dim> <n_train>
                                                                            any row-major f32 file: the first
                                                                            n_train rows are indexed, the rest query

Writes <out>/train.f32, test.f32 (row-major little-endian float32) and gt.u32 (10 ids per query) for the Rust
harness, and prints one CSV line per (library, M, ef): library,M,ef_construction,ef,recall_at_10,qps,build_seconds,
memory_mb (resident-set growth across the build: the index's own memory, the vectors already being loaded).

Cosine, not ann-benchmarks' euclidean for Fashion-MNIST: ragvault's index is cosine (unit vectors), so every library
here searches the same normalised vectors by inner product.
"""
import gzip, os, sys, time
import numpy as np

src = "/usr/share/datasets/fashion-mnist"
out = sys.argv[1]
ms = [int(m) for m in sys.argv[2].split(",")]
efs = [int(e) for e in sys.argv[3].split(",")]
EF_CONSTRUCTION = 200
K = 10
os.makedirs(out, exist_ok=True)

def normalise(x):
    x = x.astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
    return np.ascontiguousarray(x)

def images(name):
    with gzip.open(os.path.join(src, name)) as f:
        data = np.frombuffer(f.read(), dtype=np.uint8, offset=16)
    return normalise(data.reshape(-1, 784))

if len(sys.argv) > 4:
    dim, n_train = int(sys.argv[5]), int(sys.argv[6])
    everything = normalise(np.fromfile(sys.argv[4], dtype="<f4").reshape(-1, dim))
    train, test = everything[:n_train], everything[n_train:]
else:
    train = images("train-images-idx3-ubyte.gz")
    test = images("t10k-images-idx3-ubyte.gz")
    assert train.shape == (60000, 784) and test.shape == (10000, 784)
dim = train.shape[1]
if not os.path.exists(os.path.join(out, "gt.u32")):
    gt = np.empty((len(test), K), dtype=np.uint32)
    for start in range(0, len(test), 1000):
        sims = test[start:start + 1000] @ train.T
        top = np.argpartition(-sims, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        gt[start:start + 1000] = np.take_along_axis(top, order, axis=1)
    train.astype("<f4").tofile(os.path.join(out, "train.f32"))
    test.astype("<f4").tofile(os.path.join(out, "test.f32"))
    gt.astype("<u4").tofile(os.path.join(out, "gt.u32"))
gt = np.fromfile(os.path.join(out, "gt.u32"), dtype="<u4").reshape(-1, K)

def recall(found):
    return float(np.mean([len(set(f[:K]) & set(g)) / K for f, g in zip(found, gt)]))

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024

def run(library, m, build, search):
    before = rss_mb()
    t = time.perf_counter()
    index = build(m)
    build_s = time.perf_counter() - t
    memory_mb = rss_mb() - before
    for ef in efs:
        t = time.perf_counter()
        found = [search(index, q, ef) for q in test]
        qps = len(test) / (time.perf_counter() - t)
        print(f"{library},{m},{EF_CONSTRUCTION},{ef},{recall(found):.4f},{qps:.0f},{build_s:.1f},{memory_mb:.0f}", flush=True)
    del index

# ANN_LIBS=hnswlib (or faiss) limits the comparison, e.g. to save build time on 1M points.
LIBS = os.environ.get("ANN_LIBS", "hnswlib,faiss").split(",")

try:
    if "hnswlib" not in LIBS:
        raise ImportError
    import hnswlib
    def hnswlib_build(m):
        index = hnswlib.Index(space="ip", dim=dim)
        index.init_index(max_elements=len(train), M=m, ef_construction=EF_CONSTRUCTION, random_seed=1)
        index.set_num_threads(os.cpu_count())
        index.add_items(train, np.arange(len(train)))
        index.set_num_threads(1)
        return index
    def hnswlib_search(index, q, ef):
        index.set_ef(max(ef, K))
        return index.knn_query(q, k=K)[0][0]
    for m in ms:
        run("hnswlib", m, hnswlib_build, hnswlib_search)
except ImportError:
    print("# hnswlib not installed", file=sys.stderr)

try:
    if "faiss" not in LIBS:
        raise ImportError
    import faiss
    def faiss_build(m):
        faiss.omp_set_num_threads(os.cpu_count())
        index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = EF_CONSTRUCTION
        index.add(train)
        faiss.omp_set_num_threads(1)
        return index
    def faiss_search(index, q, ef):
        index.hnsw.efSearch = max(ef, K)
        return index.search(q.reshape(1, -1), K)[1][0]
    for m in ms:
        run("faiss-hnsw", m, faiss_build, faiss_search)
except ImportError:
    print("# faiss not installed", file=sys.stderr)
