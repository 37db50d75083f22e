-- Ingest jobs. The upload waits here, sealed, until a worker has stored its document; a job interrupted by a
-- crash is picked up again at start. The payload is dropped when the job finishes.
CREATE TABLE ingest_jobs (
    id             uuid        PRIMARY KEY,
    tenant_id      uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    document_id    uuid        NOT NULL,
    status         text        NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done', 'failed')),
    data_key_id    uuid        REFERENCES data_keys (id),
    payload_sealed bytea,
    header_sealed  bytea,
    size_bytes     bigint      NOT NULL CHECK (size_bytes >= 0),
    chunks         integer,
    error_code     text,
    error_message  text,
    attempts       integer     NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz
);
CREATE INDEX ingest_jobs_unfinished_idx ON ingest_jobs (created_at) WHERE status IN ('queued', 'running');
