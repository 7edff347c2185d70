-- Recovery looks for survivors only where some may be: attempts still running, or
-- ended by someone other than their own supervisor (a rescue). An attempt whose
-- supervisor recorded its end had its process group killed and reaped. Existing
-- rows: every ended attempt counts as reaped but an interrupted one, which may have
-- been a rescue.
ALTER TABLE attempts ADD COLUMN reaped INTEGER NOT NULL DEFAULT 0;
UPDATE attempts SET reaped = 1
    WHERE finished_at IS NOT NULL AND (error_type IS NULL OR error_type != 'interrupted');
DROP INDEX attempts_incarnation;
CREATE INDEX attempts_unreaped ON attempts(incarnation) WHERE reaped = 0;
CREATE INDEX incarnations_node ON incarnations(node_id);
CREATE INDEX incarnations_open ON incarnations(node_id) WHERE stopped_at IS NULL;
