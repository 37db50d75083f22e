-- Document access groups as keyed hashes (the names travel sealed in the document metadata). A document with
-- no rows here is visible to the whole tenant; one with rows only to principals holding one of its groups.
CREATE TABLE document_groups (
    tenant_id   uuid  NOT NULL,
    document_id uuid  NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    group_hash  bytea NOT NULL,
    PRIMARY KEY (document_id, group_hash)
);
CREATE INDEX document_groups_tenant_idx ON document_groups (tenant_id);
