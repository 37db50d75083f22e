#!/bin/sh
# Prepares a Vault/OpenBao server for ragvault: enables AppRole, KV v2 and transit, writes the ragvault
# policy (config/vault/ragvault.hcl), creates the `ragvault` AppRole, writes ragvault's API-key hashing key,
# and writes a secret_id to the file given as $1 (mode 0600). Prints the role_id on stdout.
#
# Needs: the `bao` (or `vault`) CLI, BAO_ADDR/VAULT_ADDR and an admin BAO_TOKEN/VAULT_TOKEN in the environment.
# Optional: RAGVAULT_TOKEN_TTL (default 1h), RAGVAULT_WRAP_TTL (response-wrap the secret_id for this long),
# RAGVAULT_ROLE_ID (a fixed role_id instead of Vault's random one, so a static config can name it).
# Short-lived Postgres logins (database.credentials = "vault"): set RAGVAULT_DB_CONNECTION_URL (how Vault reaches
# Postgres as an admin, e.g. postgresql://{{username}}:{{password}}@db:5432/ragvault with RAGVAULT_DB_USERNAME and
# RAGVAULT_DB_PASSWORD), optionally RAGVAULT_DB_TTL (default 1h) and RAGVAULT_DB_MAX_TTL (default 24h). The NOLOGIN
# role RAGVAULT_DB_OWNER_ROLE (default ragvault_owner) must exist and own the database: each leased login joins it
# and acts as it, so tables belong to the owner role and a login can be dropped when its lease ends.
#
# POSIX sh (dash, busybox ash): docker-compose.yml runs it inside the OpenBao image, which has no bash.
set -eu
# shellcheck disable=SC3040
(set -o pipefail 2>/dev/null) && set -o pipefail

secret_id_file=${1:?usage: vault-bootstrap.sh SECRET_ID_FILE}
here=$(cd "$(dirname "$0")/.." && pwd)
cli=$(command -v bao || command -v vault || true)
[ -n "$cli" ] || { echo "vault-bootstrap: neither bao nor vault is installed" >&2; exit 1; }
export BAO_ADDR=${BAO_ADDR:-${VAULT_ADDR:-}} VAULT_ADDR=${VAULT_ADDR:-${BAO_ADDR:-}}
export BAO_TOKEN=${BAO_TOKEN:-${VAULT_TOKEN:-}} VAULT_TOKEN=${VAULT_TOKEN:-${BAO_TOKEN:-}}
token_ttl=${RAGVAULT_TOKEN_TTL:-1h}

# Capture, then match in the shell: `grep -q` exiting early would SIGPIPE the CLI and, under pipefail, read as
# "not enabled".
enabled() {
  listing=$("$cli" "$1" list -format=json)
  case "$listing" in
    *"\"$2/\""*) return 0 ;;
    *) return 1 ;;
  esac
}
enabled auth approle || "$cli" auth enable approle >/dev/null
enabled secrets secret || "$cli" secrets enable -path=secret -version=2 kv >/dev/null
enabled secrets transit || "$cli" secrets enable transit >/dev/null

"$cli" policy write ragvault "$here/config/vault/ragvault.hcl" >/dev/null
"$cli" write auth/approle/role/ragvault token_policies=ragvault token_ttl="$token_ttl" \
  token_max_ttl=24h secret_id_num_uses=0 >/dev/null

# The key ragvault hashes API keys with: generated once, never rotated silently (rotation would invalidate
# every issued API key).
if ! "$cli" kv get -mount=secret ragvault/internal/api-key-hash >/dev/null 2>&1; then
  key=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  "$cli" kv put -mount=secret ragvault/internal/api-key-hash key="$key" >/dev/null
fi

if [ -n "${RAGVAULT_DB_CONNECTION_URL:-}" ]; then
  enabled secrets database || "$cli" secrets enable database >/dev/null
  owner=${RAGVAULT_DB_OWNER_ROLE:-ragvault_owner}
  "$cli" write database/config/ragvault plugin_name=postgresql-database-plugin \
    connection_url="$RAGVAULT_DB_CONNECTION_URL" \
    username="${RAGVAULT_DB_USERNAME:-postgres}" password="${RAGVAULT_DB_PASSWORD:-unused}" \
    allowed_roles=ragvault >/dev/null
  "$cli" write database/roles/ragvault db_name=ragvault \
    default_ttl="${RAGVAULT_DB_TTL:-1h}" max_ttl="${RAGVAULT_DB_MAX_TTL:-24h}" \
    creation_statements="CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE \"$owner\"; ALTER ROLE \"{{name}}\" SET role TO \"$owner\";" \
    revocation_statements="DROP ROLE IF EXISTS \"{{name}}\";" >/dev/null
fi

if [ -n "${RAGVAULT_ROLE_ID:-}" ]; then
  "$cli" write auth/approle/role/ragvault/role-id role_id="$RAGVAULT_ROLE_ID" >/dev/null
fi
role_id=$("$cli" read -field=role_id auth/approle/role/ragvault/role-id)
umask 077
if [ -n "${RAGVAULT_WRAP_TTL:-}" ]; then
  "$cli" write -f -wrap-ttl="$RAGVAULT_WRAP_TTL" -field=wrapping_token auth/approle/role/ragvault/secret-id >"$secret_id_file"
else
  "$cli" write -f -field=secret_id auth/approle/role/ragvault/secret-id >"$secret_id_file"
fi
echo "$role_id"
