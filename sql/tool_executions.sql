-- Tool executions: tool calls of steps and agent sessions, and per-tool statistics.

-- name: insert_tool_execution
-- Record the start of a tool call.
-- returns: one
-- record: runs.ToolExecution
INSERT INTO tool_executions (tool_name, input, step_id, session_id)
VALUES (%(tool_name)s::text, %(input)s::jsonb, %(step_id)s::uuid, %(session_id)s::uuid)
RETURNING id, step_id, session_id, tool_name, input, output, status, error, started_at,
          finished_at, duration_ms, created_at, updated_at;

-- name: get_tool_execution_by_id
-- One tool call by id.
-- plan: index tool_executions_pkey
-- returns: one
-- record: runs.ToolExecution
SELECT id, step_id, session_id, tool_name, input, output, status, error, started_at,
       finished_at, duration_ms, created_at, updated_at
  FROM tool_executions
 WHERE id = %(id)s::uuid;

-- name: complete_tool_execution
-- Finish a running tool call: succeeded, or failed when an error is given; the duration
-- is measured by the server. No row when it does not exist or already finished.
-- plan: index tool_executions_pkey
-- returns: one
-- record: runs.ToolExecution
UPDATE tool_executions
   SET status = CASE WHEN %(error)s::text IS NULL THEN 'succeeded' ELSE 'failed' END,
       output = %(output)s::jsonb, error = %(error)s::text,
       finished_at = greatest(now(), started_at),
       duration_ms = greatest(0, (extract(epoch FROM now() - started_at) * 1000)::bigint)
 WHERE id = %(id)s::uuid AND status = 'running'
RETURNING id, step_id, session_id, tool_name, input, output, status, error, started_at,
          finished_at, duration_ms, created_at, updated_at;

-- name: stats_tool_executions
-- Per tool, over finished calls created in [since, until): count, failures, failure rate
-- and the median and 95th percentile duration (interpolated, in ms).
-- plan: index tool_executions_created_idx
-- returns: many
-- record: runs.ToolStats
SELECT tool_name,
       count(*) AS count,
       count(*) FILTER (WHERE status = 'failed') AS failures,
       (count(*) FILTER (WHERE status = 'failed'))::float8 / count(*) AS failure_rate,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_ms
  FROM tool_executions
 WHERE created_at >= %(since)s::timestamptz AND created_at < %(until)s::timestamptz
   AND status <> 'running'
 GROUP BY tool_name
 ORDER BY tool_name;

-- name: prune_tool_executions
-- Delete up to one batch of tool calls finished before the cutoff, oldest first; running
-- calls are never deleted. Found through created_at, which a recorded call's finished_at
-- never precedes, so the range on created_at holds every call the cutoff takes.
-- plan: index tool_executions_created_idx
-- returns: rowcount
DELETE FROM tool_executions
 WHERE id IN (
     SELECT id
       FROM tool_executions
      WHERE created_at < %(cutoff)s::timestamptz
        AND status <> 'running' AND finished_at < %(cutoff)s::timestamptz
      ORDER BY created_at
      LIMIT %(batch)s::int
        FOR UPDATE SKIP LOCKED
 );
