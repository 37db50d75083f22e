#!/usr/bin/env bash
# The whole scenario set of docs/reliability.md against a release build: steady load, key rotation, OpenBao
# outage, Postgres restart, kill -9 during ingest, noisy neighbours. Each starts its own stack (fake OpenAI at a
# fixed latency, a real OpenBao, Postgres, the real `ragvault serve`), asserts its outcome, and adds rows to one
# Markdown report. Exits non-zero when a check fails.
#   benches/scenarios/run.sh [report file] [extra scenarios arguments: --only 2,3 --latency-ms 50 --quick]
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ragvault-target}"
export RAGVAULT_MODEL_DIR="${RAGVAULT_MODEL_DIR:-/var/tmp/ragvault-models/all-MiniLM-L6-v2}"
REPORT="${1:-scenarios-report.md}"; shift || true
scripts/ensure-postgres.sh >/dev/null
scripts/ensure-openbao.sh >/dev/null
scripts/fetch-model.sh >/dev/null
cargo build -q --release -p ragvault -p ragvault-benches --bin ragvault --bin scenarios
ulimit -n 65536 2>/dev/null || true
"$CARGO_TARGET_DIR/release/scenarios" --out "$REPORT" "$@"
echo "report: $REPORT"
