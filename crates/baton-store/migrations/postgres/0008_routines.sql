-- Routines, their triggers, the fires they made, and the callbacks outbox.
CREATE TABLE routines (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    name TEXT NOT NULL,
    definition TEXT NOT NULL,
    paused BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX routines_name ON routines(project_id, name);

-- A trigger's secret (webhook, github) is kept to check signatures and never shown; an
-- API trigger's token only as a hash. A cron trigger's next slot is next_fire_at.
CREATE TABLE triggers (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    routine_id TEXT NOT NULL REFERENCES routines(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    config TEXT NOT NULL,
    secret TEXT,
    token_hash TEXT,
    next_fire_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX triggers_routine ON triggers(routine_id);
CREATE INDEX triggers_due ON triggers(next_fire_at) WHERE next_fire_at IS NOT NULL;

-- One row per (trigger, fire key): a cron slot, a GitHub delivery, an Idempotency-Key.
-- The primary key is what makes a fire happen at most once across nodes.
CREATE TABLE routine_fires (
    trigger_id TEXT NOT NULL,
    fire_key TEXT NOT NULL,
    routine_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    job_id TEXT,
    input TEXT,
    error TEXT,
    fired_at BIGINT NOT NULL,
    PRIMARY KEY (trigger_id, fire_key)
);
CREATE INDEX routine_fires_routine ON routine_fires(routine_id, fired_at);
CREATE INDEX routine_fires_waiting ON routine_fires(routine_id) WHERE outcome = 'waiting';

-- The callbacks outbox: a row per job that names a callback_url, written by the
-- statement that inserts the job.
CREATE TABLE callbacks (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL,
    url TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL,
    last_status BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE UNIQUE INDEX callbacks_job ON callbacks(job_id);
CREATE INDEX callbacks_due ON callbacks(next_at) WHERE state = 'pending';

-- Each project signs its callbacks with its own secret, made when first needed.
ALTER TABLE projects ADD COLUMN callback_secret TEXT;
