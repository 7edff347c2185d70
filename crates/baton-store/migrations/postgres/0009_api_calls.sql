-- The cost ledger: one row per API call Baton's proxy passed, with who made it and what
-- it cost (millionths of a dollar; `priced` = 0 when the model was unknown and the
-- dearest price was charged).
CREATE TABLE api_calls (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    project_id TEXT NOT NULL,
    key_id TEXT,
    agent TEXT,
    routine_id TEXT,
    job_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    model TEXT,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    cache_read_tokens BIGINT NOT NULL,
    cost_micro_usd BIGINT NOT NULL,
    priced BIGINT NOT NULL,
    status BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL
);
CREATE INDEX api_calls_job ON api_calls(job_id);
CREATE INDEX api_calls_project_at ON api_calls(project_id, at);
