#!/usr/bin/env bash
# Validates docker-compose.yml (syntax, references, interpolation) without a Docker daemon: `docker compose
# config` when the Compose plugin is there, else Debian's docker-compose (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
if docker compose version >/dev/null 2>&1; then
  docker compose -f docker-compose.yml config -q
  exit 0
fi
if ! command -v docker-compose >/dev/null; then
  echo "check-compose: installing docker-compose from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq docker-compose >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null; }
fi
docker-compose -f docker-compose.yml config -q
echo "check-compose: docker-compose.yml is valid"
