-- Per-tenant data keys (DEKs), stored only wrapped under the tenant's key-encryption key (Vault transit or
-- the local keyring). `content` keys seal document text; the `index` key derives keyed pseudonyms.
CREATE TABLE data_keys (
    id           uuid        PRIMARY KEY,
    tenant_id    uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    purpose      text        NOT NULL CHECK (purpose IN ('content', 'index')),
    wrapped_key  text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Set when a newer key takes over new writes; the key still opens what it sealed.
    retired_at   timestamptz,
    rewrapped_at timestamptz
);
-- At most one key per purpose takes new writes.
CREATE UNIQUE INDEX data_keys_one_active_idx ON data_keys (tenant_id, purpose) WHERE retired_at IS NULL;
