-- Spend: a key's budget (JSON), cost alerts raised once per window, and alert deliveries
-- through the callbacks outbox (a row with its own payload; a job's own callback has none).
ALTER TABLE api_keys ADD COLUMN budget TEXT;

ALTER TABLE callbacks ADD COLUMN payload TEXT;
DROP INDEX callbacks_job;
CREATE UNIQUE INDEX callbacks_job ON callbacks(job_id) WHERE payload IS NULL;
CREATE INDEX callbacks_job_all ON callbacks(job_id);

-- One row per alert and window: the primary key is what raises each alert once.
CREATE TABLE alerts (
    project_id TEXT NOT NULL,
    alert_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    job_id TEXT,
    detail TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (project_id, alert_key)
);
CREATE INDEX alerts_at ON alerts(project_id, at);
