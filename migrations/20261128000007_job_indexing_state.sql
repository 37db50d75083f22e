-- A job whose document is stored but whose points are not yet in the index is `indexing` (reported as running):
-- `done` now means searchable. The document's transaction sets `indexing`; the worker sets `done` after the index
-- insert, or the start-up reconciliation does after a crash in between.
ALTER TABLE ingest_jobs DROP CONSTRAINT ingest_jobs_status_check;
ALTER TABLE ingest_jobs ADD CONSTRAINT ingest_jobs_status_check
    CHECK (status IN ('queued', 'running', 'indexing', 'done', 'failed'));
