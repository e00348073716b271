-- Signals: sent to an execution, consumed exactly once by a step waiting for their name.
-- A send and a wait lock the execution's row first (the engine's lock order), so the two
-- run one after the other and the second sees what the first committed: a signal is never
-- stored unconsumed while a step waits for it, nor consumed twice.

-- name: lock_signal_execution
-- Lock an execution for a send (no row when it does not exist).
-- plan: index workflow_executions_pkey
-- returns: one
-- record: runs.ExecutionLock
SELECT id, status, failure_mode, parent_step_id
  FROM workflow_executions
 WHERE id = %(execution_id)s::uuid
   FOR NO KEY UPDATE;

-- name: insert_signal
-- Store a signal; in the same statement the step of the execution that waits longest for
-- its name (if any) consumes it: queued with the signal as its input, the workers woken.
-- The caller holds the execution's row. The signal.
-- plan: index execution_steps_execution_task_key
-- returns: one
-- record: runs.Signal
WITH waiter AS MATERIALIZED (
    SELECT s.id
      FROM execution_steps s
     WHERE s.execution_id = %(execution_id)s::uuid AND s.status = 'waiting'
       AND s.signal_name = %(name)s::text
     ORDER BY s.updated_at, s.id
     LIMIT 1
       FOR NO KEY UPDATE OF s
), sent AS (
    INSERT INTO execution_signals (execution_id, name, payload, consumed_by, consumed_at)
    SELECT %(execution_id)s::uuid, %(name)s::text, %(payload)s::jsonb, w.id,
           CASE WHEN w.id IS NULL THEN NULL ELSE now() END
      FROM (SELECT 1) AS one
      LEFT JOIN waiter AS w ON true
    RETURNING id, execution_id, name, payload, created_at, consumed_by, consumed_at
), woken AS (
    UPDATE execution_steps s
       SET status = 'queued', available_at = now(), signal_id = g.id, signal_deadline = NULL
      FROM sent AS g
     WHERE s.id = g.consumed_by
    RETURNING s.id
), hint AS (
    SELECT pg_notify('flowledger_steps', '') AS sent FROM woken
)
SELECT g.id, g.execution_id, g.name, g.payload, g.created_at, g.consumed_by, g.consumed_at
  FROM sent AS g
  LEFT JOIN hint ON true;

-- name: list_signals_by_execution
-- The signals of one execution, oldest first, consumed or not.
-- plan: index execution_signals_execution_idx
-- returns: many
-- record: runs.Signal
SELECT id, execution_id, name, payload, created_at, consumed_by, consumed_at
  FROM execution_signals
 WHERE execution_id = %(execution_id)s::uuid
 ORDER BY id;
