-- Chaining an audit event used to update the single `audit_head` row twice per event. Under load (the load
-- harness: ~400 answers/s, an audit event each, 512 to a transaction) every update left a row version the next
-- one had to step over, and one insert grew to seconds. Now a transaction locks the head row once (at its first
-- event), keeps the running head in transaction-local settings, and writes it back once, at commit, from a
-- deferred trigger. The chain is the same: each event's hash covers its predecessor's, in commit order.
CREATE OR REPLACE FUNCTION audit_log_chain() RETURNS trigger AS $$
DECLARE
    head_seq bigint;
    head_hash bytea;
BEGIN
    IF current_setting('ragvault.audit_tx', true) IS DISTINCT FROM txid_current()::text THEN
        -- The lock is held until the transaction ends: no other transaction chains onto the same head.
        SELECT seq, hash INTO head_seq, head_hash FROM audit_head FOR UPDATE;
    ELSE
        head_seq := current_setting('ragvault.audit_seq')::bigint;
        head_hash := decode(current_setting('ragvault.audit_hash'), 'hex');
    END IF;
    head_seq := head_seq + 1;
    NEW.seq := head_seq;
    NEW.prev_hash := head_hash;
    NEW.hash := audit_row_digest(head_hash, head_seq, NEW.at, NEW.tenant_id, NEW.actor, NEW.action, NEW.target,
                                 NEW.request_id, NEW.details);
    -- Transaction-local (is_local = true): gone at commit or rollback, rolled back with a savepoint.
    PERFORM set_config('ragvault.audit_tx', txid_current()::text, true);
    PERFORM set_config('ragvault.audit_seq', head_seq::text, true);
    PERFORM set_config('ragvault.audit_hash', encode(NEW.hash, 'hex'), true);
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

-- Fires for every event of the transaction at commit; only its last event moves the head.
CREATE FUNCTION audit_log_write_head() RETURNS trigger AS $$
BEGIN
    IF NEW.seq = current_setting('ragvault.audit_seq')::bigint THEN
        UPDATE audit_head SET seq = NEW.seq, hash = NEW.hash;
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

-- As before (migration 10): the service role may not touch audit_head itself; the chain functions may.
ALTER FUNCTION audit_log_chain() SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION audit_log_write_head() SECURITY DEFINER SET search_path = public, pg_temp;

CREATE CONSTRAINT TRIGGER audit_log_head AFTER INSERT ON audit_log
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION audit_log_write_head();
