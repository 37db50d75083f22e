#!/usr/bin/env bash
# Creates the database named by DATABASE_URL if it does not exist yet (the service applies migrations).
set -euo pipefail
url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/ragvault}
base=${url%%\?*}
name=${base##*/}
server=${base%/*}
if ! [[ $name =~ ^[A-Za-z0-9_]+$ ]]; then
  echo "ensure-database: unexpected database name '$name'" >&2
  exit 1
fi
if ! psql "$server/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'" | grep -q 1; then
  echo "ensure-database: creating database $name" >&2
  psql "$server/postgres" -qc "CREATE DATABASE \"$name\""
fi
