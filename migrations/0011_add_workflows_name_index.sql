-- Index workflows by (name, id) so the name-sorted listing of all workflows is keyset-served.
-- transactional: false
CREATE INDEX CONCURRENTLY IF NOT EXISTS workflows_name_idx ON workflows (name, id);
