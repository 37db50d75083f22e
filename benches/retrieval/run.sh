#!/usr/bin/env bash
# Retrieval quality (recall@5, MRR@10 per mode) and ingest throughput on Debian's manual pages.
# Renders the pages named in questions.tsv with man(1), then runs the harness against a real service
# (Postgres from scripts/ensure-postgres.sh, the local model from scripts/fetch-model.sh).
#   benches/retrieval/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ragvault-target}"
PAGES=/var/tmp/ragvault-bench/manpages
bash scripts/ensure-postgres.sh >/dev/null
bash scripts/fetch-model.sh >/dev/null
mkdir -p "$PAGES"
for page in $(grep -v '^#' benches/retrieval/questions.tsv | cut -f1 | sort -u); do
  [ -s "$PAGES/$page.txt" ] || MANWIDTH=100 man -P cat "$page" 2>/dev/null | col -b > "$PAGES/$page.txt"
done
cargo run -q --release -p ragvault-benches --bin retrieval -- "$PAGES" benches/retrieval/questions.tsv
