#!/usr/bin/env bash
# /v1/ask server-side overhead: a release ragvault (benches/src/bin/ask_server.rs) with the fake provider at a
# fixed latency, driven by a load generator in a second process at each concurrency.
#   benches/ask/run.sh [provider latency ms] [seconds per step] [concurrency list]
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ragvault-target}"
LATENCY="${1:-200}"; SECONDS_PER_STEP="${2:-20}"; LEVELS="${3:-50,500}"
bash scripts/ensure-postgres.sh >/dev/null
bash scripts/fetch-model.sh >/dev/null
cargo build -q --release -p ragvault-benches --bin ask_server --bin ask_load
ulimit -n 65536 2>/dev/null || true
out=$(mktemp); trap 'kill $server 2>/dev/null || true; rm -f "$out"' EXIT
"$CARGO_TARGET_DIR/release/ask_server" "$LATENCY" > "$out" &
server=$!
for _ in $(seq 1 600); do [ -s "$out" ] && break; sleep 0.1; done
read -r url key < "$out"
echo "| concurrency | answers | errors | answers/s | client latency ms p50 / p90 / p99 / max | server overhead ms p50 / p90 / p99 / max | of which retrieval p50 / p99 | client-seen overhead ms p50 / p90 / p99 / max |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
# A short warm-up so connection set-up and first-use costs stay out of the figures.
"$CARGO_TARGET_DIR/release/ask_load" "$url" "$key" 10 2 > /dev/null
for level in ${LEVELS//,/ }; do
  "$CARGO_TARGET_DIR/release/ask_load" "$url" "$key" "$level" "$SECONDS_PER_STEP"
done
