-- Metering, budgets and the service role.

-- One row per provider call (generation or embedding). Never a key: `key_version` only says which version
-- of the leased key was used. Costs are integer micro-USD from the price table.
CREATE TABLE usage_events (
    id             bigserial   PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    tenant_id      uuid        NOT NULL,
    principal      text        NOT NULL,
    request_id     text,
    kind           text        NOT NULL CHECK (kind IN ('generation', 'embedding')),
    provider       text        NOT NULL,
    model          text        NOT NULL,
    key_version    bigint,
    input_tokens   bigint      NOT NULL CHECK (input_tokens >= 0),
    output_tokens  bigint      NOT NULL CHECK (output_tokens >= 0),
    cost_micro_usd bigint      NOT NULL CHECK (cost_micro_usd >= 0),
    latency_ms     bigint      NOT NULL CHECK (latency_ms >= 0),
    bytes_sent     bigint      NOT NULL DEFAULT 0,
    bytes_received bigint      NOT NULL DEFAULT 0,
    outcome        text        NOT NULL
);
CREATE INDEX usage_events_tenant_at_idx ON usage_events (tenant_id, at);

-- Daily totals, kept by the same transaction that writes the events (the dashboard and /v1/admin/usage read
-- these, never the raw events).
CREATE TABLE usage_daily (
    tenant_id      uuid   NOT NULL,
    day            date   NOT NULL,
    provider       text   NOT NULL,
    model          text   NOT NULL,
    requests       bigint NOT NULL DEFAULT 0,
    errors         bigint NOT NULL DEFAULT 0,
    input_tokens   bigint NOT NULL DEFAULT 0,
    output_tokens  bigint NOT NULL DEFAULT 0,
    cost_micro_usd bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, provider, model)
);

-- A tenant's budget for one calendar month (UTC). `committed` is what replicas have leased (spent or still
-- held in memory); it never passes the limit in force when leased, so spend cannot pass it either. `spent`
-- is settled cost, from usage events.
CREATE TABLE budget_months (
    tenant_id           uuid    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    month               date    NOT NULL CHECK (extract(day FROM month) = 1),
    committed_micro_usd bigint  NOT NULL DEFAULT 0 CHECK (committed_micro_usd >= 0),
    spent_micro_usd     bigint  NOT NULL DEFAULT 0 CHECK (spent_micro_usd >= 0),
    soft_alerted        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, month)
);

-- The role the service runs as in production (its login, static or leased from Vault, is a member). It may
-- append to the audit log but never change or remove an event: the grants say so, on top of the triggers.
-- Granting is a function so an administrator can re-run it (`SELECT ragvault_grant_service_role()`) after
-- creating the role, when the migrating login may not create roles itself.
CREATE FUNCTION ragvault_grant_service_role() RETURNS void AS $$
BEGIN
    EXECUTE 'GRANT USAGE ON SCHEMA public TO ragvault_service';
    EXECUTE 'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ragvault_service';
    EXECUTE 'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO ragvault_service';
    EXECUTE 'REVOKE UPDATE, DELETE, TRUNCATE ON audit_log, audit_head FROM ragvault_service';
    EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ragvault_service';
    EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO ragvault_service';
END
$$ LANGUAGE plpgsql;

-- Roles are cluster-wide and tests migrate many databases at once, hence the tolerant create.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ragvault_service') THEN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND (rolsuper OR rolcreaterole)) THEN
            RAISE NOTICE 'role ragvault_service is missing and % may not create it: an administrator should run CREATE ROLE ragvault_service NOLOGIN; SELECT ragvault_grant_service_role();', current_user;
            RETURN;
        END IF;
        BEGIN
            CREATE ROLE ragvault_service NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    PERFORM ragvault_grant_service_role();
END
$$;
-- The chain trigger moves the head as the migration owner, so inserting stays possible without UPDATE on it.
ALTER FUNCTION audit_log_chain() SECURITY DEFINER SET search_path = public, pg_temp;
