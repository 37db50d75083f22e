#!/usr/bin/env bash
# Makes sure a Postgres server answers on 127.0.0.1:5432: starts the local cluster if it is stopped, and
# installs Postgres from Debian's packages only if it is missing altogether.
set -euo pipefail

ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

if command -v pg_isready >/dev/null && ready; then
  exit 0
fi

if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  echo "ensure-postgres: no Postgres cluster found; installing postgresql" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  # Trust auth on loopback, as on the development machines: tests create and drop databases freely.
  hba=/etc/postgresql/$version/main/pg_hba.conf
  sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/; s/^(local\s+all\s+all\s+)\S+/\1trust/' "$hba"
fi

version=$(ls /etc/postgresql | sort -V | tail -n1)
echo "ensure-postgres: starting Postgres $version" >&2
pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
for _ in $(seq 1 30); do
  ready && exit 0
  sleep 1
done
echo "ensure-postgres: Postgres did not become ready on 127.0.0.1:5432" >&2
exit 1
