-- Step logs: append-only lines, written with binary COPY, read by step or execution.

-- name: append_step_logs
-- Bulk-append log lines (binary COPY; the bigint id comes from its identity).
-- returns: none
COPY step_logs (step_id, execution_id, level, message, fields, logged_at) FROM STDIN (FORMAT BINARY);

-- name: list_step_logs_by_step
-- The log lines of one step, oldest first; keyset-paginated by (logged_at, id).
-- plan: index step_logs_step_idx
-- returns: many
-- record: runs.LogLine
SELECT id, step_id, execution_id, level, message, fields, logged_at
  FROM step_logs
 WHERE step_id = %(step_id)s::uuid
   AND (%(after_logged_at)s::timestamptz IS NULL
        OR (logged_at, id) > (%(after_logged_at)s::timestamptz, %(after_id)s::bigint))
 ORDER BY logged_at, id
 LIMIT %(limit)s::int + 1;

-- name: list_step_logs_by_execution
-- The log lines of every step of one execution, oldest first; keyset-paginated by
-- (logged_at, id).
-- plan: index step_logs_execution_idx
-- returns: many
-- record: runs.LogLine
SELECT id, step_id, execution_id, level, message, fields, logged_at
  FROM step_logs
 WHERE execution_id = %(execution_id)s::uuid
   AND (%(after_logged_at)s::timestamptz IS NULL
        OR (logged_at, id) > (%(after_logged_at)s::timestamptz, %(after_id)s::bigint))
 ORDER BY logged_at, id
 LIMIT %(limit)s::int + 1;

-- name: lock_step_log_partitions
-- Serialise partition maintenance (ensure_partitions, drop_partitions) until the end of
-- the transaction, so that two processes running it at once take turns and the second
-- finds the partitions the first made.
-- plan: seqscan-ok (no table: a transaction-level advisory lock)
-- returns: none
SELECT pg_advisory_xact_lock(hashtextextended('flowledger:step_logs partitions', 0));

-- name: list_step_log_partitions
-- The partitions of step_logs, oldest month first and the default one last: each one's
-- bounds, read back from its partition bound (NULL for MINVALUE, MAXVALUE and the
-- default), and its size on disk with its indexes.
-- plan: seqscan-ok (the system catalogs: a few rows per partition)
-- returns: many
-- record: runs.LogPartition
SELECT c.relname::text AS name,
       (regexp_match(b.bound, 'FROM \(''([^'']+)''\)'))[1]::timestamptz AS starts_at,
       (regexp_match(b.bound, 'TO \(''([^'']+)''\)'))[1]::timestamptz AS ends_at,
       b.bound = 'DEFAULT' AS is_default,
       pg_total_relation_size(c.oid) AS total_bytes
  FROM pg_inherits i
  JOIN pg_class c ON c.oid = i.inhrelid
 CROSS JOIN LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS bound) b
 WHERE i.inhparent = 'step_logs'::regclass
 ORDER BY b.bound = 'DEFAULT', 2 NULLS FIRST, 1;
