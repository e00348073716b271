-- transactional: false
-- squawk-ignore-file ban-concurrent-index-creation-in-transaction -- the directive above runs this file outside a transaction, one statement at a time
-- The claim index of 0007 again, built before the queue one is dropped. The validated
-- CHECKs stay: rolling back 0020 drops them with their columns.
CREATE INDEX CONCURRENTLY IF NOT EXISTS execution_steps_claim_idx
    ON execution_steps (priority, available_at, id)
    WHERE status = 'queued';
DROP INDEX CONCURRENTLY IF EXISTS execution_steps_queue_claim_idx;
DROP INDEX CONCURRENTLY IF EXISTS execution_steps_signal_deadline_idx;
