-- Tamper-evident audit log: every event carries a sequence number and the SHA-256 of the previous event's hash
-- with its own canonical content, computed here so that no writer can skip it. `audit_head` holds the last
-- sequence number and hash: deleting events from the end breaks the chain against it.

-- Canonical form: every field as <length>:<text>, NULL as -, joined by commas: no two rows encode alike.
CREATE FUNCTION audit_field(value text) RETURNS text AS $$
    SELECT coalesce(length(value)::text || ':' || value, '-')
$$ LANGUAGE sql IMMUTABLE;

CREATE FUNCTION audit_row_digest(prev bytea, seq bigint, at timestamptz, tenant_id uuid, actor text, action text,
                                 target text, request_id text, details jsonb) RETURNS bytea AS $$
    SELECT sha256(prev || convert_to(concat_ws(',',
        audit_field(seq::text),
        audit_field(to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')),
        audit_field(tenant_id::text),
        audit_field(actor),
        audit_field(action),
        audit_field(target),
        audit_field(request_id),
        audit_field(details::text)), 'UTF8'))
$$ LANGUAGE sql STABLE;

CREATE TABLE audit_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    seq       bigint  NOT NULL,
    hash      bytea   NOT NULL
);

ALTER TABLE audit_log ADD COLUMN seq bigint;

-- Chain the events written before this migration, in id order.
ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_or_delete;
DO $$
DECLARE
    r record;
    n bigint := 0;
    h bytea := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
BEGIN
    FOR r IN SELECT * FROM audit_log ORDER BY id LOOP
        n := n + 1;
        UPDATE audit_log SET seq = n, prev_hash = h,
            hash = audit_row_digest(h, n, r.at, r.tenant_id, r.actor, r.action, r.target, r.request_id, r.details)
        WHERE id = r.id
        RETURNING hash INTO h;
    END LOOP;
    INSERT INTO audit_head (seq, hash) VALUES (n, h);
END
$$;
ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update_or_delete;

ALTER TABLE audit_log ALTER COLUMN seq SET NOT NULL,
                      ALTER COLUMN prev_hash SET NOT NULL,
                      ALTER COLUMN hash SET NOT NULL;
CREATE UNIQUE INDEX audit_log_seq_idx ON audit_log (seq);

-- The head row is locked by each insert until its transaction ends: events are chained in commit order of
-- their inserts, never two with the same predecessor.
CREATE FUNCTION audit_log_chain() RETURNS trigger AS $$
DECLARE
    head_seq bigint;
    head_hash bytea;
BEGIN
    UPDATE audit_head SET seq = seq + 1 RETURNING seq, hash INTO head_seq, head_hash;
    NEW.seq := head_seq;
    NEW.prev_hash := head_hash;
    NEW.hash := audit_row_digest(head_hash, head_seq, NEW.at, NEW.tenant_id, NEW.actor, NEW.action, NEW.target,
                                 NEW.request_id, NEW.details);
    UPDATE audit_head SET hash = NEW.hash;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_chain();
