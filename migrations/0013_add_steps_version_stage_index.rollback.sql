-- transactional: false
DROP INDEX CONCURRENTLY IF EXISTS execution_steps_version_stage_id_idx;
