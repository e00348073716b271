-- transactional: false
DROP INDEX CONCURRENTLY IF EXISTS workflow_executions_parent_step_idx;
