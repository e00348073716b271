-- Index execution_steps by the stage snapshot they run: the index of
-- execution_steps_version_stage_id_fkey, which deleting a workflow's versions checks.
-- transactional: false
-- CONCURRENTLY keeps claims and completions flowing while the index builds; it cannot run
-- inside a transaction, hence the directive above and one statement alone in this file.
CREATE INDEX CONCURRENTLY IF NOT EXISTS execution_steps_version_stage_id_idx
    ON execution_steps (version_stage_id);
