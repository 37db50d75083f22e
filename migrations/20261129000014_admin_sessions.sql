-- Operator dashboard sessions. Only a keyed hash of the session token is stored (the token lives in the
-- operator's HttpOnly cookie); a session dies with its operator key, at its expiry, or at logout.
CREATE TABLE admin_sessions (
    id              uuid        PRIMARY KEY,
    token_hash      bytea       NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    operator_key_id uuid        NOT NULL REFERENCES operator_keys (id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    ended_at        timestamptz
);
CREATE INDEX admin_sessions_expires_idx ON admin_sessions (expires_at);
