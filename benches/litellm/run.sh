#!/usr/bin/env bash
# ragvault's brokered /v1/chat/completions (policy chat_mode = "plain": authentication, key lease from OpenBao,
# budget reservation, metering, audit) beside the LiteLLM proxy and the bare upstream: the same fake OpenAI at a
# fixed latency, the same load generator and concurrency levels (benches/src/bin/chat_compare.rs).
#   benches/litellm/run.sh [report file] [chat_compare arguments: --latency-ms 50 --seconds 20 --levels 8,32,128]
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ragvault-target}"
export RAGVAULT_MODEL_DIR="${RAGVAULT_MODEL_DIR:-/var/tmp/ragvault-models/all-MiniLM-L6-v2}"
VENV="${LITELLM_VENV:-/var/tmp/ragvault-litellm-venv}"
REPORT="${1:-litellm-report.md}"; shift || true
scripts/ensure-postgres.sh >/dev/null
scripts/ensure-openbao.sh >/dev/null
scripts/fetch-model.sh >/dev/null
if [ ! -x "$VENV/bin/litellm" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'litellm[proxy]'
fi
"$VENV/bin/pip" show litellm 2>/dev/null | grep -i '^version' >&2 || true
cargo build -q --release -p ragvault -p ragvault-benches --bin ragvault --bin chat_compare --bin passthrough
"$CARGO_TARGET_DIR/release/chat_compare" --litellm "$VENV/bin/litellm" --out "$REPORT" "$@"
echo "report: $REPORT"
