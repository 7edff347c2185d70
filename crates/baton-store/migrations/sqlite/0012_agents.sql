-- Agents: every change is a new immutable version; a deletion is a version too (deleted =
-- 1), so the versions a run recorded stay readable.
CREATE TABLE agents (
    project_id TEXT NOT NULL REFERENCES projects(id),
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    definition TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (project_id, name, version)
);
