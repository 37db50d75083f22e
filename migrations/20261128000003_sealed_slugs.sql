-- Tenant slugs are stored sealed under the directory key and looked up by a keyed hash, so a database dump
-- does not name the customers. Rows written before this migration keep their clear slug until the service
-- seals it at start (and clears the column).
ALTER TABLE tenants ADD COLUMN slug_hash bytea;
ALTER TABLE tenants ADD COLUMN slug_sealed bytea;
ALTER TABLE tenants ALTER COLUMN slug DROP NOT NULL;
CREATE UNIQUE INDEX tenants_slug_hash_key ON tenants (slug_hash);
-- Every row has one form or the other.
ALTER TABLE tenants ADD CONSTRAINT tenants_slug_present
    CHECK ((slug_hash IS NOT NULL AND slug_sealed IS NOT NULL) OR slug IS NOT NULL);
