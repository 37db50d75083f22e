-- Tenants, their API keys, operator keys and the append-only audit log.
-- Keys are stored only as keyed hashes (HMAC-SHA256 under a key held by the key source).

CREATE TABLE tenants (
    id          uuid        PRIMARY KEY,
    slug        text        NOT NULL UNIQUE CHECK (slug ~ '^[a-z][a-z0-9-]{1,61}[a-z0-9]$' AND slug NOT LIKE '%--%'),
    status      text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    environment text        NOT NULL CHECK (environment IN ('production', 'sandbox')),
    policy      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id           uuid        PRIMARY KEY,
    tenant_id    uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    public_id    text        NOT NULL UNIQUE,
    key_hash     bytea       NOT NULL CHECK (octet_length(key_hash) = 32),
    name         text,
    scopes       text[]      NOT NULL CHECK (scopes <@ ARRAY['ingest', 'ask', 'tokens', 'admin']::text[]),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id, created_at);

CREATE TABLE operator_keys (
    id           uuid        PRIMARY KEY,
    public_id    text        NOT NULL UNIQUE,
    key_hash     bytea       NOT NULL CHECK (octet_length(key_hash) = 32),
    name         text,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- No foreign key to tenants: the audit trail must outlive a deleted tenant.
CREATE TABLE audit_log (
    id         bigserial   PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    tenant_id  uuid,
    actor      text        NOT NULL,
    action     text        NOT NULL,
    target     text,
    request_id text,
    details    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- Hash chain (filled by the governance work): hash = H(prev_hash || canonical row).
    prev_hash  bytea,
    hash       bytea
);
CREATE INDEX audit_log_tenant_idx ON audit_log (tenant_id, id);

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_log_no_update_or_delete
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();

CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
