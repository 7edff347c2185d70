CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL
);
INSERT INTO projects (id, created_at) VALUES ('default', 0);

CREATE TABLE incarnations (
    id TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    stopped_at INTEGER
);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    state TEXT NOT NULL,
    priority INTEGER NOT NULL,
    run_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    spec TEXT NOT NULL,
    session_id TEXT,
    lease_owner TEXT,
    lease_expires_at INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    last_seq INTEGER NOT NULL DEFAULT 0,
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
CREATE INDEX jobs_session ON jobs(session_id, state) WHERE session_id IS NOT NULL;
CREATE INDEX jobs_project_state ON jobs(project_id, state, id);

CREATE TABLE attempts (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    project_id TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    pid INTEGER,
    pid_start INTEGER,
    error_type TEXT,
    error_message TEXT,
    fenced INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, attempt)
);
CREATE INDEX attempts_incarnation ON attempts(incarnation) WHERE finished_at IS NULL;

CREATE TABLE events (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    project_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    transcript BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_job_id TEXT
);
