-- Claims take each project's due jobs in queue order, to share the slots between projects.
DROP INDEX jobs_due;
CREATE INDEX jobs_due ON jobs(project_id, priority DESC, run_at, id) WHERE state = 'queued';
