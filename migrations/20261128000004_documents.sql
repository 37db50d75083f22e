-- Documents and their chunks, sealed. Only ids, sizes, counts, timestamps and keyed hashes are clear; names,
-- metadata, chunk text and heading paths are sealed under a tenant content key (see docs/security.md).
CREATE TABLE documents (
    id              uuid        PRIMARY KEY,
    tenant_id       uuid        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- Keyed hashes (tenant index key): find "the document called X" and spot re-uploads of equal content
    -- without revealing either to someone holding only the database.
    name_hash       bytea       NOT NULL,
    content_hash    bytea       NOT NULL,
    data_key_id     uuid        NOT NULL REFERENCES data_keys (id),
    name_sealed     bytea       NOT NULL,
    metadata_sealed bytea,
    size_bytes      bigint      NOT NULL CHECK (size_bytes >= 0),
    chunk_count     integer     NOT NULL CHECK (chunk_count >= 0),
    status          text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'replaced')),
    created_at      timestamptz NOT NULL DEFAULT now()
);
-- One live document per name: a re-upload replaces the previous version in one transaction.
CREATE UNIQUE INDEX documents_live_name_idx ON documents (tenant_id, name_hash) WHERE status = 'active';

CREATE TABLE chunks (
    id             uuid    PRIMARY KEY,
    tenant_id      uuid    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    document_id    uuid    NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    ordinal        integer NOT NULL CHECK (ordinal >= 0),
    -- The index point id (keyed pseudonym of the chunk id): the map point -> chunk exists only here.
    point_id       bigint  NOT NULL,
    data_key_id    uuid    NOT NULL REFERENCES data_keys (id),
    text_sealed    bytea   NOT NULL,
    heading_sealed bytea,
    token_count    integer NOT NULL CHECK (token_count >= 0),
    UNIQUE (document_id, ordinal),
    UNIQUE (tenant_id, point_id)
);
-- Re-encryption walks the chunks still sealed under an old key.
CREATE INDEX chunks_data_key_idx ON chunks (tenant_id, data_key_id);
