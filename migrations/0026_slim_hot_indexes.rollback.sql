-- transactional: false
-- squawk-ignore-file ban-concurrent-index-creation-in-transaction -- the directive above runs this file outside a transaction, one statement at a time
-- The indexes of 0007 again, built before the partial one goes.
CREATE INDEX CONCURRENTLY IF NOT EXISTS step_attempts_execution_id_idx
    ON step_attempts (execution_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS workflow_executions_triggered_by_idx
    ON workflow_executions (triggered_by);
DROP INDEX CONCURRENTLY IF EXISTS workflow_executions_triggered_by_user_idx;
