-- Vectors, the blind keyword index and tag filters.
--
-- Each chunk keeps its embedding sealed (embeddings can be inverted into text, so they are content) together
-- with the model that made it: the index can then be rebuilt or reconciled from Postgres without calling the
-- model again, and a model switch finds the chunks to re-embed.
ALTER TABLE chunks ADD COLUMN vector_sealed bytea;
ALTER TABLE chunks ADD COLUMN embedding_model text;
-- Keyword terms in the chunk (BM25 document length).
ALTER TABLE chunks ADD COLUMN term_count integer NOT NULL DEFAULT 0 CHECK (term_count >= 0);

-- BM25 postings over keyed term hashes (HMAC of the normalised term under the tenant's index key): the
-- table reveals which chunks share a term and how often, never the term.
CREATE TABLE keyword_postings (
    tenant_id      uuid    NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    term_hash      bytea   NOT NULL,
    chunk_id       uuid    NOT NULL REFERENCES chunks (id) ON DELETE CASCADE,
    term_frequency integer NOT NULL CHECK (term_frequency > 0),
    PRIMARY KEY (tenant_id, term_hash, chunk_id)
);
CREATE INDEX keyword_postings_chunk_idx ON keyword_postings (chunk_id);

-- Tags as keyed hashes, for search filters; the tags themselves travel sealed in the document metadata.
CREATE TABLE document_tags (
    tenant_id   uuid  NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    document_id uuid  NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    tag_hash    bytea NOT NULL,
    PRIMARY KEY (document_id, tag_hash)
);
CREATE INDEX document_tags_lookup_idx ON document_tags (tenant_id, tag_hash);
