-- Access groups on tenant API keys: NULL = the whole tenant (as before); a list = ungrouped documents and
-- documents of those groups only. Names are the tenant's own labels; documents hold only keyed hashes of them.
ALTER TABLE api_keys ADD COLUMN groups text[];
