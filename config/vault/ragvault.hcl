# The exact Vault/OpenBao policy ragvault runs under: nothing more.
# Assumes KV v2 at `secret/`, transit at `transit/`, the database engine at `database/` (the defaults in
# config/default.toml); change the mount names here if you change them there.

# Provider keys: operator-wide and per-tenant overrides, read-only (operators write them, ragvault never does).
path "secret/data/ragvault/providers/*" {
  capabilities = ["read"]
}
path "secret/metadata/ragvault/providers/*" {
  capabilities = ["read"]
}
path "secret/data/ragvault/tenants/+/providers/*" {
  capabilities = ["read"]
}
path "secret/metadata/ragvault/tenants/+/providers/*" {
  capabilities = ["read"]
}

# ragvault's own keys (API-key hashing key), written once by the bootstrap script.
path "secret/data/ragvault/internal/*" {
  capabilities = ["read"]
}

# Per-tenant key-encryption keys for envelope encryption: create, use and rotate them, never export them.
path "transit/keys/ragvault-tenant-*" {
  capabilities = ["create", "read", "update", "delete"]
}
path "transit/keys/ragvault-tenant-*/rotate" {
  capabilities = ["update"]
}
path "transit/keys/ragvault-tenant-*/config" {
  capabilities = ["update"]
}
path "transit/datakey/plaintext/ragvault-tenant-*" {
  capabilities = ["update"]
}
path "transit/decrypt/ragvault-tenant-*" {
  capabilities = ["update"]
}
path "transit/rewrap/ragvault-tenant-*" {
  capabilities = ["update"]
}

# Short-lived Postgres logins from the database secrets engine.
path "database/creds/ragvault" {
  capabilities = ["read"]
}
path "sys/leases/renew" {
  capabilities = ["update"]
}
path "sys/leases/revoke" {
  capabilities = ["update"]
}

# Its own token: look up and renew.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
