-- A session id belongs to its project: one project's running job never holds up a job of
-- another project's session that happens to share its id.
DROP INDEX jobs_one_running_per_session;
CREATE UNIQUE INDEX jobs_one_running_per_session ON jobs(project_id, session_id) WHERE state = 'running';
DROP INDEX jobs_session;
CREATE INDEX jobs_session ON jobs(project_id, session_id, state) WHERE session_id IS NOT NULL;
