-- Executions: runs of a workflow, pinned to a version, and their lifecycle.
-- Legal status changes are enforced by the workflow_executions_status_transition trigger.

-- name: insert_execution
-- Start an execution of the workflow's current version, directly 'running'. Returns no row
-- when the workflow does not exist or when the idempotency key is already used
-- (ON CONFLICT DO NOTHING waits for a concurrent insert of the same key to settle).
-- returns: one
-- record: runs.Execution
INSERT INTO workflow_executions (workflow_id, workflow_version, parent_execution_id,
                                 triggered_by, status, idempotency_key, parameters, started_at)
SELECT w.id, w.version, %(parent_execution_id)s::uuid, %(triggered_by)s::uuid, 'running',
       %(idempotency_key)s::text, %(parameters)s::jsonb, now()
  FROM workflows w
 WHERE w.id = %(workflow_id)s::uuid
    ON CONFLICT ON CONSTRAINT workflow_executions_idempotency_key DO NOTHING
RETURNING id, workflow_id, workflow_version, parent_execution_id, triggered_by, status, attempt,
          idempotency_key, parameters, variables, task_graph, error_message, pause_reason,
          started_at, finished_at, row_version, created_at, updated_at;

-- name: get_execution_by_idempotency_key
-- The execution a workflow already started under this idempotency key.
-- plan: index workflow_executions_idempotency_key, workflow_executions_workflow_created_idx, workflow_executions_workflow_status_idx, workflow_executions_workflow_version_idx
-- returns: one
-- record: runs.Execution
SELECT id, workflow_id, workflow_version, parent_execution_id, triggered_by, status, attempt,
       idempotency_key, parameters, variables, task_graph, error_message, pause_reason,
       started_at, finished_at, row_version, created_at, updated_at
  FROM workflow_executions
 WHERE workflow_id = %(workflow_id)s::uuid AND idempotency_key = %(idempotency_key)s::text;

-- name: insert_execution_steps
-- Create the steps of a new execution in one statement: one per stage, or one per
-- with_items element (task_index 0..n-1; an empty array yields none), all queued, with the
-- stage's retry budget and timeout.
-- returns: rowcount
INSERT INTO execution_steps (execution_id, stage_id, task_name, task_index, status,
                             max_attempts, timeout_seconds)
SELECT %(execution_id)s::uuid, st.id, st.name, items.task_index, 'queued',
       (st.retry_policy ->> 'max_attempts')::numeric::int, st.timeout_seconds
  FROM workflow_stages st
 CROSS JOIN LATERAL generate_series(
           0,
           CASE WHEN st.with_items IS NULL THEN 0 ELSE jsonb_array_length(st.with_items) - 1 END
       ) AS items (task_index)
 WHERE st.workflow_id = %(workflow_id)s::uuid
 ORDER BY st.position, items.task_index;

-- name: get_execution_by_id
-- One execution by id.
-- plan: index workflow_executions_pkey
-- returns: one
-- record: runs.Execution
SELECT id, workflow_id, workflow_version, parent_execution_id, triggered_by, status, attempt,
       idempotency_key, parameters, variables, task_graph, error_message, pause_reason,
       started_at, finished_at, row_version, created_at, updated_at
  FROM workflow_executions
 WHERE id = %(id)s::uuid;

-- name: list_executions
-- Executions, newest first, optionally of one workflow / status / parent and created in
-- [created_from, created_to); keyset-paginated by (created_at, id).
-- plan: index workflow_executions_created_idx, workflow_executions_workflow_created_idx, workflow_executions_parent_idx, workflow_executions_workflow_status_idx, workflow_executions_status_updated_idx
-- returns: many
-- record: runs.Execution
SELECT id, workflow_id, workflow_version, parent_execution_id, triggered_by, status, attempt,
       idempotency_key, parameters, variables, task_graph, error_message, pause_reason,
       started_at, finished_at, row_version, created_at, updated_at
  FROM workflow_executions
 WHERE (%(workflow_id)s::uuid IS NULL OR workflow_id = %(workflow_id)s::uuid)
   AND (%(status)s::text IS NULL OR status = %(status)s::text)
   AND (%(parent_execution_id)s::uuid IS NULL
        OR parent_execution_id = %(parent_execution_id)s::uuid)
   AND (%(created_from)s::timestamptz IS NULL OR created_at >= %(created_from)s::timestamptz)
   AND (%(created_to)s::timestamptz IS NULL OR created_at < %(created_to)s::timestamptz)
   AND (%(after_created_at)s::timestamptz IS NULL
        OR (created_at, id) < (%(after_created_at)s::timestamptz, %(after_id)s::uuid))
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s::int + 1;

-- name: find_paused_executions
-- Paused executions, longest paused first, optionally only those paused before a time.
-- plan: index workflow_executions_paused_idx
-- returns: many
-- record: runs.Execution
SELECT id, workflow_id, workflow_version, parent_execution_id, triggered_by, status, attempt,
       idempotency_key, parameters, variables, task_graph, error_message, pause_reason,
       started_at, finished_at, row_version, created_at, updated_at
  FROM workflow_executions
 WHERE status = 'paused'
   AND (%(paused_before)s::timestamptz IS NULL OR updated_at < %(paused_before)s::timestamptz)
 ORDER BY updated_at, id
 LIMIT %(limit)s::int;

-- name: lock_execution
-- Lock an execution row for the rest of the transaction. Step completions take it so
-- that the "every step done" check of concurrent completions runs one after the other.
-- plan: index workflow_executions_pkey
-- returns: scalar
SELECT status
  FROM workflow_executions
 WHERE id = %(id)s::uuid
   FOR NO KEY UPDATE;

-- name: set_execution_paused
-- Pause an execution (its queued steps are no longer claimed); no row when it does not
-- exist or already is paused.
-- plan: index workflow_executions_pkey
-- returns: one
-- record: runs.Execution
UPDATE workflow_executions
   SET status = 'paused', pause_reason = %(reason)s::text, row_version = row_version + 1
 WHERE id = %(id)s::uuid AND status <> 'paused'
RETURNING id, workflow_id, workflow_version, parent_execution_id, triggered_by, status, attempt,
          idempotency_key, parameters, variables, task_graph, error_message, pause_reason,
          started_at, finished_at, row_version, created_at, updated_at;

-- name: set_execution_running
-- Resume a paused (or start a pending) execution; no row when it does not exist or
-- already is running.
-- plan: index workflow_executions_pkey
-- returns: one
-- record: runs.Execution
UPDATE workflow_executions
   SET status = 'running', pause_reason = NULL, started_at = coalesce(started_at, now()),
       row_version = row_version + 1
 WHERE id = %(id)s::uuid AND status <> 'running'
RETURNING id, workflow_id, workflow_version, parent_execution_id, triggered_by, status, attempt,
          idempotency_key, parameters, variables, task_graph, error_message, pause_reason,
          started_at, finished_at, row_version, created_at, updated_at;

-- name: cancel_execution
-- Mark an execution cancelled; no row when it does not exist or already is cancelled.
-- plan: index workflow_executions_pkey
-- returns: one
-- record: runs.Execution
UPDATE workflow_executions
   SET status = 'cancelled', pause_reason = NULL, finished_at = now(),
       row_version = row_version + 1
 WHERE id = %(id)s::uuid AND status <> 'cancelled'
RETURNING id, workflow_id, workflow_version, parent_execution_id, triggered_by, status, attempt,
          idempotency_key, parameters, variables, task_graph, error_message, pause_reason,
          started_at, finished_at, row_version, created_at, updated_at;

-- name: cancel_execution_steps
-- Cancel every unfinished step of an execution, waiting for rows other transactions hold
-- (a completion in flight either commits first or finds its step cancelled). Their open
-- attempts are closed by close_cancelled_attempts, in a statement of its own.
-- plan: index execution_steps_execution_task_key
-- returns: scalar
WITH target AS (
    SELECT id
      FROM execution_steps
     WHERE execution_id = %(execution_id)s::uuid
       AND status IN ('pending', 'queued', 'running')
       FOR NO KEY UPDATE
), cancelled AS (
    UPDATE execution_steps s
       SET status = 'cancelled', lease_owner = NULL, lease_expires_at = NULL,
           completed_at = now(), error = %(reason)s::text
      FROM target t
     WHERE s.id = t.id
    RETURNING s.id
)
SELECT count(*) FROM cancelled;

-- name: cancel_leftover_steps
-- After an execution failed: cancel its unfinished steps that no other transaction holds
-- (SKIP LOCKED: a failing step must never wait for a sibling, which could deadlock).
-- plan: index execution_steps_execution_task_key
-- returns: scalar
WITH target AS (
    SELECT id
      FROM execution_steps
     WHERE execution_id = %(execution_id)s::uuid
       AND status IN ('pending', 'queued', 'running')
       FOR NO KEY UPDATE SKIP LOCKED
), cancelled AS (
    UPDATE execution_steps s
       SET status = 'cancelled', lease_owner = NULL, lease_expires_at = NULL,
           completed_at = now(), error = %(reason)s::text
      FROM target t
     WHERE s.id = t.id
    RETURNING s.id
)
SELECT count(*) FROM cancelled;

-- name: close_cancelled_attempts
-- Close the still-open attempts of an execution's cancelled steps, after the statement that
-- cancelled them: a claim that committed while that statement waited for the step's row
-- lock inserted an attempt row its snapshot cannot see; this statement's snapshot can.
-- plan: index execution_steps_execution_task_key, step_attempts_step_id_attempt_key
-- returns: rowcount
UPDATE step_attempts a
   SET finished_at = greatest(now(), a.started_at), outcome = 'cancelled',
       error = %(reason)s::text
  FROM execution_steps s
 WHERE s.execution_id = %(execution_id)s::uuid AND s.status = 'cancelled'
   AND a.step_id = s.id AND a.finished_at IS NULL;

-- name: complete_execution_if_done
-- Complete a running execution whose every step is completed or skipped; no row otherwise.
-- Run it with the execution locked (lock_execution) so concurrent last steps serialise.
-- plan: index workflow_executions_pkey, workflow_executions_status_updated_idx, workflow_executions_workflow_status_idx
-- returns: one
-- record: runs.Execution
UPDATE workflow_executions x
   SET status = 'completed', finished_at = now(), row_version = x.row_version + 1
 WHERE x.id = %(id)s::uuid AND x.status = 'running'
   AND NOT EXISTS (
       SELECT 1
         FROM execution_steps s
        WHERE s.execution_id = x.id AND s.status NOT IN ('completed', 'skipped')
   )
RETURNING id, workflow_id, workflow_version, parent_execution_id, triggered_by, status, attempt,
          idempotency_key, parameters, variables, task_graph, error_message, pause_reason,
          started_at, finished_at, row_version, created_at, updated_at;

-- name: fail_execution
-- Fail an unfinished execution; no row when it already is finished.
-- plan: index workflow_executions_pkey
-- returns: one
-- record: runs.Execution
UPDATE workflow_executions
   SET status = 'failed', pause_reason = NULL, error_message = %(error)s::text,
       started_at = coalesce(started_at, now()), finished_at = now(),
       row_version = row_version + 1
 WHERE id = %(id)s::uuid AND status IN ('pending', 'running', 'paused')
RETURNING id, workflow_id, workflow_version, parent_execution_id, triggered_by, status, attempt,
          idempotency_key, parameters, variables, task_graph, error_message, pause_reason,
          started_at, finished_at, row_version, created_at, updated_at;

-- name: prune_finished_executions
-- Delete up to one batch of executions finished before the cutoff, oldest first; their
-- steps, attempts, logs, tool calls and sub-executions go with them (ON DELETE CASCADE).
-- plan: index workflow_executions_finished_idx
-- returns: rowcount
DELETE FROM workflow_executions
 WHERE id IN (
     SELECT id
       FROM workflow_executions
      WHERE finished_at IS NOT NULL AND finished_at < %(cutoff)s::timestamptz
      ORDER BY finished_at
      LIMIT %(batch)s::int
        FOR UPDATE SKIP LOCKED
 );
