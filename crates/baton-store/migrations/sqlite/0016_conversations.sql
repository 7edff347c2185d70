-- The conversation a compatible API's request continued (a digest of its messages before
-- the answer): how the next request of that conversation finds the job, and its session.
ALTER TABLE jobs ADD COLUMN conversation TEXT;
CREATE INDEX jobs_conversation ON jobs(project_id, conversation) WHERE conversation IS NOT NULL;
