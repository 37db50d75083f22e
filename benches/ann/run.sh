#!/usr/bin/env bash
# ANN quality/speed on Fashion-MNIST: ragvault's embedded index vs hnswlib vs faiss-cpu, same data, same grid.
# Needs the Debian package dataset-fashion-mnist (installed if missing) and PyPI (hnswlib, faiss-cpu, numpy in a
# venv under /var/tmp). Prints CSV: library,M,ef_construction,ef,recall_at_10,qps,build_seconds,memory_mb.
#   benches/ann/run.sh [M list] [ef list]      e.g. benches/ann/run.sh 16 10,20,40,80,160,320
set -euo pipefail
cd "$(dirname "$0")/../.."
MS="${1:-16}"
EFS="${2:-10,20,40,80,160,320}"
OUT=/var/tmp/ragvault-bench/ann
VENV=/var/tmp/ragvault-bench/venv
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ragvault-target}"
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null
fi
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q numpy hnswlib faiss-cpu
fi
echo "library,M,ef_construction,ef,recall_at_10,qps,build_seconds,memory_mb"
"$VENV/bin/python" benches/ann/prepare_and_compare.py "$OUT" "$MS" "$EFS"
cargo run -q --release -p ragvault-benches --bin ann -- "$OUT" "$MS" "$EFS"
