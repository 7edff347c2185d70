-- PostgreSQL's schema: the same tables and columns as SQLite's, in one step (the backend
-- was new when SQLite had five), plus an index on lease owners for cancels and rescues and a
-- unique index that allows one running attempt per session (SQLite has both since its
-- seventh).
CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);
INSERT INTO projects (id, created_at) VALUES ('default', 0);

CREATE TABLE incarnations (
    id TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    pid BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    stopped_at BIGINT
);
CREATE INDEX incarnations_node ON incarnations(node_id);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    state TEXT NOT NULL,
    priority BIGINT NOT NULL,
    run_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    attempt BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    spec TEXT NOT NULL,
    session_id TEXT,
    lease_owner TEXT,
    lease_expires_at BIGINT,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    last_seq BIGINT NOT NULL DEFAULT 0,
    outcome TEXT,
    error_type TEXT,
    error_message TEXT,
    idempotency_key TEXT,
    request_hash TEXT
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs(project_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_due ON jobs(priority DESC, run_at, id) WHERE state = 'queued';
CREATE INDEX jobs_running ON jobs(lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_lease_owner ON jobs(lease_owner) WHERE state = 'running';
CREATE UNIQUE INDEX jobs_one_running_per_session ON jobs(session_id) WHERE state = 'running';
CREATE INDEX jobs_session ON jobs(session_id, state) WHERE session_id IS NOT NULL;
CREATE INDEX jobs_project_state ON jobs(project_id, state, id);
CREATE INDEX jobs_finished ON jobs(state, finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE attempts (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    attempt BIGINT NOT NULL,
    project_id TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    pid BIGINT,
    pid_start BIGINT,
    error_type TEXT,
    error_message TEXT,
    fenced BIGINT NOT NULL DEFAULT 0,
    warm BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, attempt)
);
CREATE INDEX attempts_incarnation ON attempts(incarnation) WHERE finished_at IS NULL;

CREATE TABLE events (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    project_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    transcript BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_job_id TEXT
);

CREATE TABLE idempotency_keys (
    project_id TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status BIGINT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, key)
);
