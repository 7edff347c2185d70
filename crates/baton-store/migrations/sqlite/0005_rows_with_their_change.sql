-- The rows every job and every claim bring with them, written by the statement that
-- makes the change: a job's first event, and an attempt's row and first event. One
-- statement is one round trip to the writer and commits alone. (PostgreSQL writes
-- them in the same transaction instead; its conformance is the same.)
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
