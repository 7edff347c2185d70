-- Routines, their triggers, the fires they made, and the callbacks outbox.
CREATE TABLE routines (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    name TEXT NOT NULL,
    definition TEXT NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
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
    next_fire_at INTEGER,
    created_at INTEGER NOT NULL
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
    fired_at INTEGER NOT NULL,
    PRIMARY KEY (trigger_id, fire_key)
);
CREATE INDEX routine_fires_routine ON routine_fires(routine_id, fired_at);
CREATE INDEX routine_fires_waiting ON routine_fires(routine_id) WHERE outcome = 'waiting';

-- The callbacks outbox: a row per job that names a callback_url, made with the job.
CREATE TABLE callbacks (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL,
    url TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at INTEGER NOT NULL,
    last_status INTEGER,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    delivered_at INTEGER
);
CREATE UNIQUE INDEX callbacks_job ON callbacks(job_id);
CREATE INDEX callbacks_due ON callbacks(next_at) WHERE state = 'pending';

CREATE TRIGGER jobs_callback AFTER INSERT ON jobs
WHEN json_extract(NEW.spec, '$.callback_url') IS NOT NULL
BEGIN
    INSERT INTO callbacks (id, job_id, project_id, url, state, attempts, next_at, created_at)
    VALUES ('dlv_' || replace(NEW.id, '-', ''), NEW.id, NEW.project_id,
            json_extract(NEW.spec, '$.callback_url'), 'pending', 0, NEW.created_at, NEW.created_at);
END;

-- Each project signs its callbacks with its own secret, made when first needed.
ALTER TABLE projects ADD COLUMN callback_secret TEXT;
