-- The metering journal's commit marks: for each journal segment (a file in a replica's data_dir), the highest
-- sequence number whose usage and audit events are committed. Written in the same transaction as those
-- events, so a replay after a crash starts exactly after the last committed entry. A row goes when its
-- segment file is deleted.
CREATE TABLE metering_journal_marks (
    segment       text        PRIMARY KEY,
    committed_seq bigint      NOT NULL CHECK (committed_seq >= 0),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
