-- Index child executions by the parent step that waits for them: the index of
-- workflow_executions_parent_step_id_fkey, and how a step finds its child. Most executions
-- have no parent step; the FK lookup (parent_step_id = $1) implies IS NOT NULL.
-- transactional: false
-- CONCURRENTLY keeps starts flowing while the index builds; it cannot run inside a
-- transaction, hence the directive above and one statement alone in this file.
CREATE INDEX CONCURRENTLY IF NOT EXISTS workflow_executions_parent_step_idx
    ON workflow_executions (parent_step_id) WHERE parent_step_id IS NOT NULL;
