-- What PostgreSQL has had from its first step, so the two schemas are the same: one
-- running attempt per session, enforced by the database too (the claim already takes
-- at most one), and running jobs found by their lease's owner (cancels, rescues).
CREATE INDEX jobs_lease_owner ON jobs(lease_owner) WHERE state = 'running';
CREATE UNIQUE INDEX jobs_one_running_per_session ON jobs(session_id) WHERE state = 'running';
