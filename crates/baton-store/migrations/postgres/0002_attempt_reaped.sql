-- As SQLite's sixth.
ALTER TABLE attempts ADD COLUMN reaped BIGINT NOT NULL DEFAULT 0;
UPDATE attempts SET reaped = 1
    WHERE finished_at IS NOT NULL AND (error_type IS NULL OR error_type != 'interrupted');
DROP INDEX attempts_incarnation;
CREATE INDEX attempts_unreaped ON attempts(incarnation) WHERE reaped = 0;
CREATE INDEX incarnations_open ON incarnations(node_id) WHERE stopped_at IS NULL;
