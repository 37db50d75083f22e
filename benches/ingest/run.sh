#!/usr/bin/env bash
# A real manual, end to end, the way a user ingests one: the PostgreSQL 15 manual's HTML (Debian's
# postgresql-doc-15: 1,169 pages) through `ragvault ingest` against `ragvault serve` on the default configuration
# (its own database and data directory, release build). Reports files, chunks, wall time, chunks/s, the server's
# peak RSS and where ingest time went (server metrics), then the same command again (everything unchanged), and
# in the same run the embedding engines side by side on the manual's chunk texts: ragvault on ONNX Runtime and on
# candle, and Python sentence-transformers (torch, CPU) when a Python with it is given.
#
#   benches/ingest/run.sh [report.md]
#   ST_PYTHON=/path/to/venv/bin/python benches/ingest/run.sh report.md   # with sentence-transformers
#
# MANUAL=<folder> ingests another folder; CANDLE_SAMPLE (default 1000) is how many chunk texts candle embeds (it
# is the slow engine; the others embed them all).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ragvault-target}"
export RAGVAULT_MODEL_DIR="${RAGVAULT_MODEL_DIR:-/var/tmp/ragvault-models/all-MiniLM-L6-v2}"
MANUAL=${MANUAL:-/usr/share/doc/postgresql-doc-15/html}
CANDLE_SAMPLE=${CANDLE_SAMPLE:-1000}
REPORT=${1:-/dev/stdout}
PORT=${PORT:-18089}

if [ ! -d "$MANUAL" ]; then
  echo "ingest bench: installing postgresql-doc-15 (the manual)" >&2
  apt-get install -y -qq postgresql-doc-15 >/dev/null
fi
bash scripts/ensure-postgres.sh >/dev/null
bash scripts/fetch-model.sh >/dev/null
cargo build -q --release -p ragvault -p ragvault-benches --bin ragvault --bin embed --bin chunk_texts
bin="$CARGO_TARGET_DIR/release"

work=$(mktemp -d)
db="ragvault_ingest_bench_$$"
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $db" >/dev/null
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
export RAGVAULT__DATA_DIR="$work/data" RAGVAULT__LISTEN="127.0.0.1:$PORT" RAGVAULT__LOG__LEVEL=warn
export RAGVAULT__EMBEDDING__MODEL_DIR="$RAGVAULT_MODEL_DIR"
"$bin/ragvault" serve 2>"$work/server.log" &
server=$!
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break
  sleep 0.1
done
key=$("$bin/ragvault" tenant create manual 2>/dev/null | sed -n 's/^api_key: //p')
export RAGVAULT_URL="http://127.0.0.1:$PORT" RAGVAULT_API_KEY="$key"
files=$(find "$MANUAL" -type f -name '*.html' | wc -l)

# One run of the command; its summary line and wall time. Files refused for their content are listed in the
# report (the command then exits 1, as it should); anything else stops the benchmark.
ingest() {
  local started ended status=0
  started=$(date +%s.%N)
  "$bin/ragvault" ingest "$MANUAL" --tenant manual >"$work/ingest.out" 2>"$work/ingest.err" || status=$?
  ended=$(date +%s.%N)
  if ! grep -q '^ingested' "$work/ingest.out"; then
    cat "$work/ingest.err" >&2
    return 1
  fi
  grep -E '^/.*: ' "$work/ingest.err" >>"$work/refused" || true
  echo "$(grep '^ingested' "$work/ingest.out") | wall $(awk "BEGIN {printf \"%.1f\", $ended - $started}") s | exit $status"
}
first=$(ingest)
peak_rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
metrics=$(curl -s "http://127.0.0.1:$PORT/metrics")
stage() { echo "$metrics" | awk -v s="$1" '$1 ~ "ragvault_ingest_stage_seconds_total\\{stage=\""s"\"\\}" {print $2}'; }
parse=$(stage parse); embed=$(stage embed); store=$(stage store); index=$(stage index)
second=$(ingest)

"$bin/chunk_texts" "$MANUAL" "$work/chunks.jsonl" >/dev/null
chunks=$(wc -l <"$work/chunks.jsonl")
shuf -n "$CANDLE_SAMPLE" --random-source=<(yes) "$work/chunks.jsonl" >"$work/sample.jsonl"
ort=$("$bin/embed" --texts "$work/chunks.jsonl" 64 onnxruntime)
candle=$("$bin/embed" --texts "$work/sample.jsonl" 64 candle)
if [ -n "${ST_PYTHON:-}" ]; then
  st=$("$ST_PYTHON" benches/embedding/reference.py "$RAGVAULT_MODEL_DIR" file "$work/chunks.jsonl" 32 2>/dev/null)
else
  st="not run (set ST_PYTHON to a Python with sentence-transformers)"
fi

{
  echo "## Ingest of $MANUAL ($(date -u +%Y-%m-%d), $(nproc) cores, $(git rev-parse --short HEAD))"
  echo
  echo "| run | result |"
  echo "| --- | --- |"
  echo "| first \`ragvault ingest\` ($files HTML files) | $first |"
  echo "| same command again | $second |"
  echo "| server peak RSS | $((peak_rss_kib / 1024)) MiB |"
  echo "| server time per stage (s, summed over jobs on 2 workers) | parse+chunk+scan $parse, embed $embed, seal+store $store, index $index |"
  echo
  echo "Refused (first run, then the second):"
  echo
  if [ -s "$work/refused" ]; then sed 's/^/    /' "$work/refused"; else echo "    none"; fi
  echo
  echo "Embedding the same $chunks chunk texts (heading path + text, as ingest embeds them):"
  echo
  echo "| embedder | chunks/s |"
  echo "| --- | --- |"
  echo "| $ort | |"
  echo "| $candle | |"
  echo "| $st | |"
} >"$REPORT"
