-- The claim index leads with the queue: a claim reads the front of each queue it serves in
-- claim order. The reaper finds the steps whose wait for a signal is over by deadline.
-- Then validate the queue CHECKs 0020 added NOT VALID.
-- transactional: false
-- squawk-ignore-file ban-concurrent-index-creation-in-transaction -- the directive above runs this file outside a transaction, one statement at a time
-- CONCURRENTLY keeps claims and completions flowing while the index builds and the old
-- one goes; VALIDATE CONSTRAINT takes a SHARE UPDATE EXCLUSIVE lock, which they pass too.
CREATE INDEX CONCURRENTLY IF NOT EXISTS execution_steps_queue_claim_idx
    ON execution_steps (queue, priority, available_at, id)
    WHERE status = 'queued';
DROP INDEX CONCURRENTLY IF EXISTS execution_steps_claim_idx;
CREATE INDEX CONCURRENTLY IF NOT EXISTS execution_steps_signal_deadline_idx
    ON execution_steps (signal_deadline)
    WHERE status = 'waiting';
ALTER TABLE workflow_stages VALIDATE CONSTRAINT workflow_stages_queue_check;
ALTER TABLE execution_steps VALIDATE CONSTRAINT execution_steps_queue_check;
