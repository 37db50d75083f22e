#!/usr/bin/env bash
# ANN comparison on all-MiniLM-L6-v2 vectors (384-d) of a generated manual corpus: N sentences embedded by
# ragvault's local model, the first N-1000 indexed, the last 1000 as queries. Same libraries and grid as run.sh.
#   benches/ann/run-minilm.sh [N] [M list] [ef list]      e.g. benches/ann/run-minilm.sh 51000 16 10,20,40,80,160
# VECTORS=<file.f32> takes the first N rows of a larger file of the same sentences' vectors instead of embedding
# (benches/embedding/reference.py <model dir> vectors <n> <file> writes one 2.7x faster than candle here).
set -euo pipefail
cd "$(dirname "$0")/../.."
N="${1:-51000}"; MS="${2:-16}"; EFS="${3:-10,20,40,80,160}"
OUT=/var/tmp/ragvault-bench/minilm-$N
VENV=/var/tmp/ragvault-bench/venv
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ragvault-target}"
bash scripts/fetch-model.sh >/dev/null
mkdir -p "$OUT"
if [ -n "${VECTORS:-}" ] && [ ! -s "$OUT/all.f32" ]; then
  [ "$(stat -c %s "$VECTORS")" -ge $((N * 384 * 4)) ] || { echo "$VECTORS holds fewer than $N vectors" >&2; exit 1; }
  head -c $((N * 384 * 4)) "$VECTORS" > "$OUT/all.f32"
fi
[ -s "$OUT/all.f32" ] || cargo run -q --release -p ragvault-benches --bin embed -- "$N" 64 "$OUT/all.f32" >&2
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q numpy hnswlib faiss-cpu
fi
echo "library,M,ef_construction,ef,recall_at_10,qps,build_seconds,memory_mb"
"$VENV/bin/python" benches/ann/prepare_and_compare.py "$OUT" "$MS" "$EFS" "$OUT/all.f32" 384 $((N - 1000))
cargo run -q --release -p ragvault-benches --bin ann -- "$OUT" "$MS" "$EFS" 384
