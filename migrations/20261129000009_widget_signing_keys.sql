-- Key ids of widget-token signing keys. The keys themselves are never stored: each is derived from the
-- root secret and its id by the credentials crate. The newest key without `retired_at` signs; a retired
-- key still verifies tokens until `verify_until` (its retirement plus the longest token lifetime), so a
-- rotation never cuts off tokens already handed to browsers.
CREATE TABLE widget_signing_keys (
    kid          text PRIMARY KEY CHECK (kid ~ '^[a-z0-9]{1,32}$'),
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    retired_at   timestamptz,
    verify_until timestamptz,
    CHECK ((retired_at IS NULL) = (verify_until IS NULL))
);
