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
