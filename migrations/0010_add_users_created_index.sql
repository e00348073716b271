-- Index users by (created_at, id) so the keyset listing of users never scans the table.
-- transactional: false
-- CONCURRENTLY keeps writes to users flowing while the index builds; it cannot run inside
-- a transaction, hence the directive above and one statement alone in this file.
CREATE INDEX CONCURRENTLY IF NOT EXISTS users_created_idx ON users (created_at, id);
