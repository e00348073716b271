-- transactional: false
DROP INDEX CONCURRENTLY IF EXISTS workflows_name_idx;
