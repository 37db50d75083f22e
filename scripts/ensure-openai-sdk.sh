#!/usr/bin/env bash
# The official OpenAI Python SDK in a venv, for the test that points it at /v1/chat/completions.
# Installs only when missing.
set -euo pipefail
VENV="${RAGVAULT_SDK_VENV:-/var/tmp/ragvault-sdk-venv}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import openai' 2>/dev/null; then
  exit 0
fi
echo "ensure-openai-sdk: installing the openai package into $VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q 'openai>=1.40,<3'
