//! The schema, as an ordered list of migrations. Each runs once, in a transaction, and is
//! recorded in `schema_migrations`; a database newer than this binary is refused.

pub const SQLITE: &[&str] = &[
    r#"
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
"#,
    r#"
ALTER TABLE attempts ADD COLUMN warm INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
CREATE INDEX jobs_finished ON jobs(state, finished_at) WHERE finished_at IS NOT NULL;
"#,
    r#"
CREATE TABLE idempotency_keys (
    project_id TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (project_id, key)
);
"#,
    // The rows every job and every claim bring with them, written by the statement that
    // makes the change: a job's first event, and an attempt's row and first event. One
    // statement is one round trip to the writer and commits alone. (PostgreSQL writes
    // them in the same transaction instead; its conformance is the same.)
    r#"
CREATE TRIGGER jobs_queued AFTER INSERT ON jobs
BEGIN
    INSERT INTO events (job_id, seq, project_id, attempt, at, kind, data)
    VALUES (NEW.id, 1, NEW.project_id, 0, NEW.created_at, 'job.queued', '{"state":"queued"}');
END;
CREATE TRIGGER jobs_claimed AFTER UPDATE OF state ON jobs
WHEN OLD.state = 'queued' AND NEW.state = 'running'
BEGIN
    INSERT INTO attempts (job_id, attempt, project_id, incarnation, started_at)
    VALUES (NEW.id, NEW.attempt, NEW.project_id, NEW.lease_owner, NEW.updated_at);
    INSERT INTO events (job_id, seq, project_id, attempt, at, kind, data)
    VALUES (NEW.id, NEW.last_seq, NEW.project_id, NEW.attempt, NEW.updated_at, 'attempt.started',
            json_object('attempt', NEW.attempt, 'incarnation', NEW.lease_owner));
END;
"#,
    // Recovery looks for survivors only where some may be: attempts still running, or
    // ended by someone other than their own supervisor (a rescue). An attempt whose
    // supervisor recorded its end had its process group killed and reaped. Existing
    // rows: every ended attempt counts as reaped but an interrupted one, which may have
    // been a rescue.
    r#"
ALTER TABLE attempts ADD COLUMN reaped INTEGER NOT NULL DEFAULT 0;
UPDATE attempts SET reaped = 1
    WHERE finished_at IS NOT NULL AND (error_type IS NULL OR error_type != 'interrupted');
DROP INDEX attempts_incarnation;
CREATE INDEX attempts_unreaped ON attempts(incarnation) WHERE reaped = 0;
CREATE INDEX incarnations_node ON incarnations(node_id);
CREATE INDEX incarnations_open ON incarnations(node_id) WHERE stopped_at IS NULL;
"#,
];

/// PostgreSQL's schema: the same tables and columns as SQLite's, in one step (the backend
/// is new), plus what several nodes need: a unique index that allows one running attempt
/// per session, and an index on lease owners for cancels and rescues.
pub const POSTGRES: &[&str] = &[
    r#"
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
"#,
    // As SQLite's sixth.
    r#"
ALTER TABLE attempts ADD COLUMN reaped BIGINT NOT NULL DEFAULT 0;
UPDATE attempts SET reaped = 1
    WHERE finished_at IS NOT NULL AND (error_type IS NULL OR error_type != 'interrupted');
DROP INDEX attempts_incarnation;
CREATE INDEX attempts_unreaped ON attempts(incarnation) WHERE reaped = 0;
CREATE INDEX incarnations_open ON incarnations(node_id) WHERE stopped_at IS NULL;
"#,
];
