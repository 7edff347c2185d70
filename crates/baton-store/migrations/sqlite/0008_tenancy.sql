-- Tenancy: a project's name and settings (quotas, job defaults, as JSON), API keys (the
-- secret only as a hash), and the audit log of authenticated changes.
ALTER TABLE projects ADD COLUMN name TEXT NOT NULL DEFAULT '';
ALTER TABLE projects ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';
ALTER TABLE projects ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    last_used_at INTEGER,
    revoked_at INTEGER
);
CREATE INDEX api_keys_project ON api_keys(project_id);

CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at INTEGER NOT NULL,
    project_id TEXT NOT NULL,
    key_id TEXT,
    action TEXT NOT NULL,
    route TEXT NOT NULL,
    target TEXT,
    outcome TEXT NOT NULL,
    request_id TEXT NOT NULL
);
CREATE INDEX audit_log_project ON audit_log(project_id, id);
CREATE INDEX audit_log_at ON audit_log(at);
