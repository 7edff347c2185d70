-- A key's own request rate limit, per minute (none when NULL).
ALTER TABLE api_keys ADD COLUMN requests_per_minute BIGINT;
