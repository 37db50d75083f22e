-- Principals (an API key, a widget subject) suspended by anomaly response until an operator lifts them.
CREATE TABLE suspensions (
    id         uuid        PRIMARY KEY,
    tenant_id  uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    principal  text        NOT NULL,
    reason     jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    lifted_at  timestamptz,
    lifted_by  text
);
CREATE UNIQUE INDEX suspensions_active_idx ON suspensions (tenant_id, principal) WHERE lifted_at IS NULL;
