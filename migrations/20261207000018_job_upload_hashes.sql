-- A re-run of `ragvault ingest` over an unchanged folder must embed nothing: an upload whose keyed name and
-- content hashes match the live document is answered at once, and one that matches a job still waiting for a
-- worker (a run interrupted and started again) is given that job instead of a second one. The hashes are
-- keyed with the tenant's index key like the documents' own, so they say nothing without it.
ALTER TABLE ingest_jobs ADD COLUMN name_hash bytea, ADD COLUMN content_hash bytea;
CREATE INDEX ingest_jobs_pending_name_idx ON ingest_jobs (tenant_id, name_hash, created_at)
    WHERE status IN ('queued', 'running', 'indexing');
