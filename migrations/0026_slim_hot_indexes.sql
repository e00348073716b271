-- Fewer index entries per claim and per started execution:
-- * step_attempts_execution_id_idx goes with the key 0025 dropped (no query reads attempts
--   by execution: they are read by step, with step_attempts_step_id_attempt_key);
-- * workflow_executions_triggered_by_idx holds only executions a user started: the
--   index of workflow_executions_triggered_by_fkey, whose ON DELETE SET NULL looks rows up
--   by triggered_by = the user (which implies IS NOT NULL, so the partial index serves it).
--   Executions started by the engine (schedules, sub-workflows, services) add no entry.
-- transactional: false
-- squawk-ignore-file ban-concurrent-index-creation-in-transaction -- the directive above runs this file outside a transaction, one statement at a time
CREATE INDEX CONCURRENTLY IF NOT EXISTS workflow_executions_triggered_by_user_idx
    ON workflow_executions (triggered_by)
    WHERE triggered_by IS NOT NULL;
DROP INDEX CONCURRENTLY IF EXISTS workflow_executions_triggered_by_idx;
DROP INDEX CONCURRENTLY IF EXISTS step_attempts_execution_id_idx;
