-- Replicas cache who may call (API and operator key rows, tenant status) so that authenticating a request
-- costs no round trip. Every change that could make a cached answer wrong is announced at commit on the
-- channel `ragvault_access_changes`, whoever makes it (the API, the CLI, a hand-written UPDATE): each replica
-- listens and stops trusting what it cached. `last_used_at` is left out on purpose: it changes every minute
-- per busy key and decides nothing.
CREATE FUNCTION notify_access_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ragvault_access_changes', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_access_change
    AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF public_id, key_hash, tenant_id, scopes, groups, expires_at, revoked_at
    ON api_keys FOR EACH STATEMENT EXECUTE FUNCTION notify_access_change();

CREATE TRIGGER operator_keys_access_change
    AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF public_id, key_hash, expires_at, revoked_at
    ON operator_keys FOR EACH STATEMENT EXECUTE FUNCTION notify_access_change();

CREATE TRIGGER tenants_access_change
    AFTER DELETE OR TRUNCATE OR UPDATE OF id, status
    ON tenants FOR EACH STATEMENT EXECUTE FUNCTION notify_access_change();
