-- Executions: runs of a workflow, pinned to a version, and their lifecycle.
-- Legal status changes are enforced by the workflow_executions_status_transition trigger.

-- name: start_executions
-- Start executions in one statement, one per request (the i-th element of every array):
-- for a workflow that exists, is not archived and is enabled, the execution of its current
-- version (running, or completed at once when the version has no step), with the workflow's
-- failure mode and the version's dependency graph; its steps from the version's stage
-- snapshot (one per with_items element; queued when they depend on nothing, else pending
-- with the number of steps they wait for; their concurrency and rate-limit keys rendered
-- from the parameters, with those keys' slots); `execution.started` (and `execution.completed`)
-- in the outbox; and the wake-ups of the relay and of the workers. A request whose
-- idempotency key is already used (or used earlier in the batch) inserts nothing. The
-- executions created, in request order. FOR SHARE: stage edits of the workflows (which
-- lock their rows) wait for the start to commit, so the steps name live stages.
-- A workflow with max_running_executions: its slot row is locked (in workflow_id order,
-- held until commit; after a wait its newest version is read, so the count is exact) and
-- only as many executions as it has free slots start running, in request order; the
-- others are created pending (started_at NULL, `execution.pending` in the outbox) and
-- start when slots free (the triggers of migration 0024). An execution with no step takes no slot.
-- plan: index workflows_pkey
-- returns: many
-- record: runs.Execution
WITH startable AS MATERIALIZED (
    SELECT w.id, w.version, w.failure_mode, w.max_running_executions
      FROM workflows AS w
     WHERE w.id = ANY (%(workflow_ids)s::uuid[])
       AND w.status <> 'archived' AND w.enabled
       FOR SHARE OF w
), slot AS MATERIALIZED (
    SELECT s.workflow_id, greatest(w.max_running_executions - s.running, 0) AS free
      FROM workflow_run_slots AS s
      JOIN startable AS w ON w.id = s.workflow_id
     WHERE w.max_running_executions IS NOT NULL
     ORDER BY s.workflow_id
       FOR NO KEY UPDATE OF s
), request AS MATERIALIZED (
    -- Ids made once the slot rows are held: a capped workflow's executions get ids in the
    -- order they take its slot row, the order its pending executions start in.
    SELECT uuid_generate_v7() AS id, r.n, r.workflow_id, r.parameters, r.idempotency_key,
           r.triggered_by, r.parent_execution_id, r.parent_step_id
      FROM (SELECT count(*) FROM slot) AS held
     CROSS JOIN unnest(%(workflow_ids)s::uuid[], %(parameters)s::jsonb[],
                       %(idempotency_keys)s::text[], %(triggered_by)s::uuid[],
                       %(parent_execution_ids)s::uuid[], %(parent_step_ids)s::uuid[])
           WITH ORDINALITY AS r (workflow_id, parameters, idempotency_key, triggered_by,
                                 parent_execution_id, parent_step_id, n)
     ORDER BY r.n
), stage AS MATERIALIZED (
    -- After the lock: version_stages_to_start reads with a snapshot of its own, taken once
    -- the workflow's row is held, so a start that waited for a stage edit finds the stages
    -- of the version that edit made (the statement's snapshot predates them).
    SELECT w.id AS workflow_id, v.id, v.stage_id, v.name, v.position, v.depends_on,
           v.retry_policy, v.timeout_seconds, v.queue, v.concurrency, v.rate_limit, v.width,
           v.waits_for
      FROM startable AS w
     CROSS JOIN LATERAL version_stages_to_start(w.id, w.version) AS v
), admission AS MATERIALIZED (
    -- The requests of capped workflows that create an execution with steps, the first
    -- `free` of each workflow in request order admitted; a request whose key is taken
    -- (here or earlier in the batch) inserts nothing and takes no slot. A key taken by a
    -- transaction that commits meanwhile leaves its slot free: the insert trigger
    -- (count_run_slots) then starts the pending execution that slot was due to.
    SELECT r.id,
           row_number() OVER (PARTITION BY r.workflow_id ORDER BY r.n) <= sl.free AS admitted
      FROM request AS r
      JOIN slot AS sl ON sl.workflow_id = r.workflow_id
     WHERE EXISTS (SELECT 1 FROM stage AS s WHERE s.workflow_id = r.workflow_id)
       AND NOT EXISTS (SELECT 1
                         FROM request AS e
                        WHERE e.workflow_id = r.workflow_id
                          AND e.idempotency_key = r.idempotency_key AND e.n < r.n)
       AND NOT EXISTS (SELECT 1
                         FROM workflow_executions AS x
                        WHERE x.workflow_id = r.workflow_id
                          AND x.idempotency_key = r.idempotency_key)
), execution AS (
    INSERT INTO workflow_executions (id, workflow_id, workflow_version, parent_execution_id,
                                     parent_step_id, triggered_by, status, idempotency_key,
                                     parameters, started_at, finished_at, failure_mode,
                                     task_graph)
    SELECT r.id, w.id, w.version, r.parent_execution_id, r.parent_step_id, r.triggered_by,
           q.status, r.idempotency_key, r.parameters,
           CASE WHEN q.status = 'pending' THEN NULL ELSE now() END,
           CASE WHEN q.status = 'completed' THEN now() END, w.failure_mode, g.graph
      FROM request AS r
      JOIN startable AS w ON w.id = r.workflow_id
     CROSS JOIN LATERAL (
           SELECT coalesce(sum(s.width), 0) AS steps,
                  coalesce(jsonb_object_agg(s.name, to_jsonb(s.depends_on))
                               FILTER (WHERE s.name IS NOT NULL), '{}'::jsonb) AS graph
             FROM stage AS s
            WHERE s.workflow_id = w.id
           ) AS g
      LEFT JOIN admission AS a ON a.id = r.id
     CROSS JOIN LATERAL (
           SELECT CASE WHEN g.steps = 0 THEN 'completed'
                       WHEN w.max_running_executions IS NULL OR a.admitted THEN 'running'
                       ELSE 'pending' END AS status
           ) AS q
     ORDER BY r.n
        ON CONFLICT ON CONSTRAINT workflow_executions_idempotency_key DO NOTHING
    RETURNING id, workflow_id, workflow_version, parent_execution_id, triggered_by, status, attempt,
          idempotency_key, parameters, variables, task_graph, error_message, pause_reason,
          started_at, finished_at, row_version, created_at, updated_at, failure_mode,
          parent_step_id
), created_steps AS (
    INSERT INTO execution_steps (execution_id, stage_id, version_stage_id, task_name,
                                 task_index, status, deps_remaining, max_attempts,
                                 timeout_seconds, queue, concurrency_key, concurrency_limit,
                                 rate_key, rate_limit, rate_window)
    SELECT x.id, s.stage_id, s.id, s.name, i.task_index,
           CASE WHEN s.waits_for = 0 THEN 'queued' ELSE 'pending' END, s.waits_for,
           (s.retry_policy ->> 'max_attempts')::numeric::int, s.timeout_seconds, s.queue,
           CASE WHEN s.concurrency IS NOT NULL
                THEN render_limit_key(s.concurrency ->> 'key', x.parameters) END,
           (s.concurrency ->> 'limit')::int,
           CASE WHEN s.rate_limit IS NOT NULL
                THEN render_limit_key(s.rate_limit ->> 'key', x.parameters) END,
           (s.rate_limit ->> 'limit')::int,
           make_interval(secs => (s.rate_limit ->> 'per_seconds')::float8)
      FROM execution AS x
      JOIN stage AS s ON s.workflow_id = x.workflow_id
     CROSS JOIN LATERAL generate_series(0, s.width - 1) AS i (task_index)
     ORDER BY x.id, s.position, i.task_index
    RETURNING execution_id, status, concurrency_key, concurrency_limit, rate_key, rate_limit
), concurrency_slots_made AS (
    -- Slots 1..limit of each concurrency key the new steps name, unless its slot `limit`
    -- exists already (one probe in the usual case).
    INSERT INTO concurrency_slots (key, slot)
    SELECT k.key, n.slot
      FROM (SELECT c.concurrency_key AS key, max(c.concurrency_limit) AS lim
              FROM created_steps AS c
             WHERE c.concurrency_key IS NOT NULL
             GROUP BY c.concurrency_key) AS k
     CROSS JOIN LATERAL generate_series(1, k.lim) AS n (slot)
     WHERE NOT EXISTS (SELECT 1 FROM concurrency_slots AS o WHERE o.key = k.key AND o.slot = k.lim)
     ORDER BY k.key, n.slot
        ON CONFLICT DO NOTHING
), rate_slots_made AS (
    INSERT INTO rate_slots (key, slot)
    SELECT k.key, n.slot
      FROM (SELECT c.rate_key AS key, max(c.rate_limit) AS lim
              FROM created_steps AS c
             WHERE c.rate_key IS NOT NULL
             GROUP BY c.rate_key) AS k
     CROSS JOIN LATERAL generate_series(1, k.lim) AS n (slot)
     WHERE NOT EXISTS (SELECT 1 FROM rate_slots AS o WHERE o.key = k.key AND o.slot = k.lim)
     ORDER BY k.key, n.slot
        ON CONFLICT DO NOTHING
), events AS (
    INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
    SELECT 'execution', x.id, e.event_type,
           jsonb_build_object('workflow_id', x.workflow_id::text,
                              'workflow_version', x.workflow_version, 'status', e.status)
      FROM execution AS x
     CROSS JOIN (VALUES (1, 'execution.started', 'running'),
                        (2, 'execution.completed', 'completed'),
                        (3, 'execution.pending', 'pending')) AS e (n, event_type, status)
     WHERE CASE x.status WHEN 'pending' THEN e.n = 3
                         WHEN 'completed' THEN e.n < 3
                         ELSE e.n = 1 END
     ORDER BY x.id, e.n
), hint AS (
    SELECT pg_notify('flowledger_outbox', '') AS sent
      FROM (SELECT 1 FROM execution LIMIT 1) AS any_started
    UNION ALL
    SELECT pg_notify('flowledger_steps', '')
      FROM (SELECT 1
              FROM created_steps AS c
              JOIN execution AS x ON x.id = c.execution_id
             WHERE c.status = 'queued' AND x.status = 'running'
             LIMIT 1) AS any_queued
)
SELECT x.id, x.workflow_id, x.workflow_version, x.parent_execution_id, x.triggered_by,
       x.status, x.attempt, x.idempotency_key, x.parameters, x.variables, x.task_graph,
       x.error_message, x.pause_reason, x.started_at, x.finished_at, x.row_version,
       x.created_at, x.updated_at, x.failure_mode, x.parent_step_id
  FROM execution AS x
  JOIN request AS r ON r.id = x.id
 CROSS JOIN (SELECT count(*) FROM hint) AS sent
 ORDER BY r.n;

-- name: get_workflow_startable
-- Why a workflow cannot be started: its status and enabled flag (no row when it is gone).
-- plan: index workflows_pkey
-- returns: one
-- record: runs.WorkflowState
SELECT status, enabled
  FROM workflows
 WHERE id = %(workflow_id)s::uuid;

-- name: get_executions_by_idempotency_keys
-- The executions workflows already started under these idempotency keys (the i-th key of
-- the i-th workflow).
-- plan: index workflow_executions_idempotency_key
-- returns: many
-- record: runs.Execution
SELECT x.id, x.workflow_id, x.workflow_version, x.parent_execution_id, x.triggered_by,
       x.status, x.attempt, x.idempotency_key, x.parameters, x.variables, x.task_graph,
       x.error_message, x.pause_reason, x.started_at, x.finished_at, x.row_version,
       x.created_at, x.updated_at, x.failure_mode, x.parent_step_id
  FROM unnest(%(workflow_ids)s::uuid[], %(idempotency_keys)s::text[]) AS k (workflow_id, key)
  JOIN workflow_executions AS x
    ON x.workflow_id = k.workflow_id AND x.idempotency_key = k.key;

-- name: get_execution_by_id
-- One execution by id.
-- plan: index workflow_executions_pkey
-- returns: one
-- record: runs.Execution
SELECT id, workflow_id, workflow_version, parent_execution_id, triggered_by, status, attempt,
       idempotency_key, parameters, variables, task_graph, error_message, pause_reason,
       started_at, finished_at, row_version, created_at, updated_at, failure_mode, parent_step_id
  FROM workflow_executions
 WHERE id = %(id)s::uuid;

-- name: list_executions
-- Executions, newest first, optionally of one workflow / status / parent and created in
-- [created_from, created_to); keyset-paginated by (created_at, id).
-- plan: index workflow_executions_created_idx
-- returns: many
-- record: runs.Execution
SELECT id, workflow_id, workflow_version, parent_execution_id, triggered_by, status, attempt,
       idempotency_key, parameters, variables, task_graph, error_message, pause_reason,
       started_at, finished_at, row_version, created_at, updated_at, failure_mode, parent_step_id
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
       started_at, finished_at, row_version, created_at, updated_at, failure_mode, parent_step_id
  FROM workflow_executions
 WHERE status = 'paused'
   AND (%(paused_before)s::timestamptz IS NULL OR updated_at < %(paused_before)s::timestamptz)
 ORDER BY updated_at, id
 LIMIT %(limit)s::int;

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
          started_at, finished_at, row_version, created_at, updated_at, failure_mode,
          parent_step_id;

-- name: set_execution_running
-- Resume a paused execution (it kept its slot); no row unless it is paused. A pending
-- execution is not started here: it waits for a slot of its workflow.
-- plan: index workflow_executions_pkey
-- returns: one
-- record: runs.Execution
UPDATE workflow_executions
   SET status = 'running', pause_reason = NULL, row_version = row_version + 1
 WHERE id = %(id)s::uuid AND status = 'paused'
RETURNING id, workflow_id, workflow_version, parent_execution_id, triggered_by, status, attempt,
          idempotency_key, parameters, variables, task_graph, error_message, pause_reason,
          started_at, finished_at, row_version, created_at, updated_at, failure_mode,
          parent_step_id;

-- name: cancel_execution
-- Mark an execution cancelled; no row when it does not exist or already is cancelled.
-- greatest(): a pending execution started by a transaction that committed while this one
-- waited for its row has a started_at (clock_timestamp()) after this transaction's now().
-- plan: index workflow_executions_pkey
-- returns: one
-- record: runs.Execution
UPDATE workflow_executions
   SET status = 'cancelled', pause_reason = NULL, finished_at = greatest(now(), started_at),
       row_version = row_version + 1
 WHERE id = %(id)s::uuid AND status <> 'cancelled'
RETURNING id, workflow_id, workflow_version, parent_execution_id, triggered_by, status, attempt,
          idempotency_key, parameters, variables, task_graph, error_message, pause_reason,
          started_at, finished_at, row_version, created_at, updated_at, failure_mode,
          parent_step_id;

-- name: cancel_execution_steps
-- Cancel every unfinished step of an execution (cancelled or failed), waiting for rows
-- other transactions hold: the caller holds the execution's row, so only a claim can be in
-- flight, and it either commits first or finds its step cancelled. Their open attempts are
-- closed by close_cancelled_attempts, in a statement of its own.
-- plan: index execution_steps_execution_task_key
-- returns: scalar
WITH target AS (
    SELECT id
      FROM execution_steps
     WHERE execution_id = %(execution_id)s::uuid
       AND status IN ('pending', 'queued', 'running', 'waiting')
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

-- name: finish_executions_if_settled
-- Finish the running executions (of ids) none of whose steps can run any more (none
-- pending, queued, running or waiting): 'failed' naming the first step that failed or
-- timed out (what the 'continue' failure mode ends with), else 'completed'; append an
-- `execution.<status>` outbox event for each (with the relay's wake-up hint when any
-- finished). The executions finished. Run it with the executions locked, so that
-- concurrent last steps settle one after the other.
-- Each execution is looked up alone by its primary key, and its steps by their execution
-- (the LIMITs keep these lookups from being merged into joins, and the status is tested
-- outside them): a generic plan made while the statistics say few executions run, or few
-- steps failed, would otherwise read the status index over every running execution, or
-- hash every failed step.
-- plan: index workflow_executions_pkey, execution_steps_execution_task_key
-- returns: many
-- record: runs.Execution
WITH settled AS MATERIALIZED (
    SELECT x.id, f.error
      FROM unnest(%(ids)s::uuid[]) AS i (id)
     CROSS JOIN LATERAL (
           SELECT x.id, x.status
             FROM workflow_executions AS x
            WHERE x.id = i.id
            LIMIT 1
           ) AS x
      LEFT JOIN LATERAL (
           SELECT true AS busy
             FROM execution_steps AS s
            WHERE s.execution_id = x.id
              AND s.status IN ('pending', 'queued', 'running', 'waiting')
            LIMIT 1
           ) AS b ON true
      LEFT JOIN LATERAL (
           SELECT 'step ' || s.task_name || '[' || s.task_index || '] ' || s.status
                  || coalesce(': ' || s.error, '') AS error
             FROM execution_steps AS s
            WHERE s.execution_id = x.id AND s.status IN ('failed', 'timed_out')
            ORDER BY s.completed_at, s.id
            LIMIT 1
           ) AS f ON true
     WHERE x.status = 'running' AND b.busy IS NULL
), finished AS (
    UPDATE workflow_executions AS x
       SET status = CASE WHEN t.error IS NULL THEN 'completed' ELSE 'failed' END,
           error_message = t.error, finished_at = now(), row_version = x.row_version + 1,
           updated_at = now()
      FROM settled AS t
     WHERE x.id = t.id
    RETURNING x.id, x.workflow_id, x.workflow_version, x.parent_execution_id, x.triggered_by,
              x.status, x.attempt, x.idempotency_key, x.parameters, x.variables,
              x.task_graph, x.error_message, x.pause_reason, x.started_at, x.finished_at,
              x.row_version, x.created_at, x.updated_at, x.failure_mode, x.parent_step_id
), announced AS (
    INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
    SELECT 'execution', f.id, 'execution.' || f.status,
           jsonb_build_object('workflow_id', f.workflow_id::text,
                              'workflow_version', f.workflow_version, 'status', f.status)
           || CASE WHEN f.error_message IS NULL THEN '{}'::jsonb
                   ELSE jsonb_build_object('error', f.error_message) END
      FROM finished AS f
     ORDER BY f.id
), hint AS (
    SELECT pg_notify('flowledger_outbox', '') AS sent
      FROM finished
     LIMIT 1
)
SELECT f.id, f.workflow_id, f.workflow_version, f.parent_execution_id, f.triggered_by,
       f.status, f.attempt, f.idempotency_key, f.parameters, f.variables, f.task_graph,
       f.error_message, f.pause_reason, f.started_at, f.finished_at, f.row_version,
       f.created_at, f.updated_at, f.failure_mode, f.parent_step_id
  FROM finished AS f
  LEFT JOIN hint ON true
 ORDER BY f.id;

-- name: fail_execution
-- Fail an unfinished execution; no row when it already is finished (greatest(): as in
-- cancel_execution).
-- plan: index workflow_executions_pkey
-- returns: one
-- record: runs.Execution
UPDATE workflow_executions
   SET status = 'failed', pause_reason = NULL, error_message = %(error)s::text,
       started_at = coalesce(started_at, now()), finished_at = greatest(now(), started_at),
       row_version = row_version + 1
 WHERE id = %(id)s::uuid AND status IN ('pending', 'running', 'paused')
RETURNING id, workflow_id, workflow_version, parent_execution_id, triggered_by, status, attempt,
          idempotency_key, parameters, variables, task_graph, error_message, pause_reason,
          started_at, finished_at, row_version, created_at, updated_at, failure_mode,
          parent_step_id;

-- name: prune_finished_executions
-- Delete up to one batch of executions finished before the cutoff, oldest first; their
-- steps, attempts, logs, tool calls and sub-executions go with them (ON DELETE CASCADE).
-- plan: index workflow_executions_finished_idx
-- prepare: never (a batch of a retention pass: its generic plan, blind to the batch size, joins the whole primary key)
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

-- name: retry_execution
-- Put a failed execution back to running as its next attempt; no row unless it is failed.
-- Its workflow's row is locked FOR SHARE (a cap being set waits, so it counts this
-- execution); with a cap, its slot row too (as a start locks it), and the execution waits
-- as pending when no slot is free, unless it has no step to run again (it then takes no
-- slot, as the caller finishes it at once).
-- plan: index workflow_executions_pkey, workflows_pkey
-- returns: one
-- record: runs.Execution
WITH target AS MATERIALIZED (
    SELECT x.id, x.workflow_id,
           EXISTS (SELECT 1
                     FROM execution_steps AS s
                    WHERE s.execution_id = x.id
                      AND s.status IN ('failed', 'timed_out', 'skipped', 'cancelled'))
               AS has_work
      FROM workflow_executions AS x
     WHERE x.id = %(id)s::uuid AND x.status = 'failed'
), owner AS MATERIALIZED (
    SELECT w.id, w.max_running_executions
      FROM workflows AS w
     WHERE w.id = (SELECT t.workflow_id FROM target AS t)
       FOR SHARE OF w
), slot AS MATERIALIZED (
    SELECT greatest(o.max_running_executions - s.running, 0) AS free
      FROM workflow_run_slots AS s
      JOIN owner AS o ON o.id = s.workflow_id
     WHERE o.max_running_executions IS NOT NULL
       FOR NO KEY UPDATE OF s
)
UPDATE workflow_executions AS x
   SET status = CASE WHEN t.has_work AND (SELECT sl.free FROM slot AS sl) = 0 THEN 'pending'
                     ELSE 'running' END,
       attempt = x.attempt + 1, error_message = NULL, finished_at = NULL,
       row_version = x.row_version + 1
  FROM target AS t
  JOIN owner AS o ON o.id = t.workflow_id
 WHERE x.id = t.id AND x.status = 'failed'
RETURNING x.id, x.workflow_id, x.workflow_version, x.parent_execution_id, x.triggered_by,
          x.status, x.attempt, x.idempotency_key, x.parameters, x.variables, x.task_graph,
          x.error_message, x.pause_reason, x.started_at, x.finished_at, x.row_version,
          x.created_at, x.updated_at, x.failure_mode, x.parent_step_id;

-- name: requeue_execution_steps
-- Retry: every failed, timed-out, skipped or cancelled step of an execution runs again with
-- a fresh attempt budget (its stage's max_attempts more; attempt numbers go on, so the
-- attempt history stays), queued when every step it depends on is completed, else pending
-- with the count of those that are not. Completed steps keep their outputs. Wakes the
-- workers; the number of steps requeued.
-- plan: index execution_steps_execution_task_key
-- returns: scalar
WITH again AS (
    SELECT s.id, coalesce((v.retry_policy ->> 'max_attempts')::numeric::int, s.max_attempts)
               AS budget,
           (SELECT count(*)
              FROM execution_steps AS d
             WHERE d.execution_id = s.execution_id AND d.task_name = ANY (v.depends_on)
               AND d.status <> 'completed')::int AS waiting_for
      FROM execution_steps AS s
      LEFT JOIN workflow_version_stages AS v ON v.id = s.version_stage_id
     WHERE s.execution_id = %(id)s::uuid
       AND s.status IN ('failed', 'timed_out', 'skipped', 'cancelled')
), requeued AS (
    UPDATE execution_steps AS s
       SET status = CASE WHEN a.waiting_for = 0 THEN 'queued' ELSE 'pending' END,
           deps_remaining = a.waiting_for, max_attempts = s.attempt + a.budget,
           available_at = now(), completed_at = NULL, duration_ms = NULL, error = NULL,
           lease_owner = NULL, lease_expires_at = NULL
      FROM again AS a
     WHERE s.id = a.id
    RETURNING s.status
), hint AS (
    SELECT pg_notify('flowledger_steps', '') AS sent
      FROM (SELECT 1 FROM requeued AS r WHERE r.status = 'queued' LIMIT 1) AS any_queued
)
SELECT count(*) FROM requeued LEFT JOIN hint ON true;

-- name: queue_ready_steps
-- On resume: queue the pending steps of an execution whose dependencies all completed
-- while it was paused (a paused execution promotes nothing), and wake the workers.
-- plan: index execution_steps_execution_task_key
-- returns: scalar
WITH queued AS (
    UPDATE execution_steps
       SET status = 'queued', available_at = now()
     WHERE execution_id = %(id)s::uuid AND status = 'pending' AND deps_remaining = 0
    RETURNING id
), hint AS (
    SELECT pg_notify('flowledger_steps', '') AS sent
      FROM (SELECT 1 FROM queued LIMIT 1) AS any_queued
)
SELECT count(*) FROM queued LEFT JOIN hint ON true;

-- name: update_execution_variables
-- Replace an execution's variables if its row_version still is the expected one; no row
-- otherwise (NotFound or StaleWrite, told apart by get_execution_by_id).
-- plan: index workflow_executions_pkey
-- returns: one
-- record: runs.Execution
UPDATE workflow_executions
   SET variables = %(variables)s::jsonb, row_version = row_version + 1
 WHERE id = %(id)s::uuid AND row_version = %(expected_version)s::int
RETURNING id, workflow_id, workflow_version, parent_execution_id, triggered_by, status, attempt,
          idempotency_key, parameters, variables, task_graph, error_message, pause_reason,
          started_at, finished_at, row_version, created_at, updated_at, failure_mode,
          parent_step_id;

-- name: get_execution_progress
-- Where an execution stands, derived from its steps in one pass over their index range:
-- step counts per status, and each task name in exactly one list by its steps' states
-- (failed > current > pending > cancelled > skipped > completed; a with_items task is
-- completed when all its items are).
-- plan: index workflow_executions_pkey, execution_steps_execution_task_key
-- returns: one
-- record: runs.ExecutionProgress
WITH per_task AS (
    SELECT s.task_name, s.status, count(*)::int AS n
      FROM execution_steps AS s
     WHERE s.execution_id = %(id)s::uuid
     GROUP BY s.task_name, s.status
), tasks AS (
    SELECT t.task_name,
           CASE WHEN bool_or(t.status IN ('failed', 'timed_out')) THEN 'failed'
                WHEN bool_or(t.status IN ('queued', 'running', 'waiting')) THEN 'current'
                WHEN bool_or(t.status = 'pending') THEN 'pending'
                WHEN bool_or(t.status = 'cancelled') THEN 'cancelled'
                WHEN bool_or(t.status = 'skipped') THEN 'skipped'
                ELSE 'completed'
           END AS state
      FROM per_task AS t
     GROUP BY t.task_name
)
SELECT e.id AS execution_id, e.status, e.attempt,
       coalesce((SELECT jsonb_object_agg(c.status, c.n)
                   FROM (SELECT p.status, sum(p.n)::int AS n
                           FROM per_task AS p
                          GROUP BY p.status) AS c), '{}'::jsonb) AS counts,
       ARRAY(SELECT t.task_name FROM tasks AS t WHERE t.state = 'current'
              ORDER BY t.task_name) AS current,
       ARRAY(SELECT t.task_name FROM tasks AS t WHERE t.state = 'pending'
              ORDER BY t.task_name) AS pending,
       ARRAY(SELECT t.task_name FROM tasks AS t WHERE t.state = 'completed'
              ORDER BY t.task_name) AS completed,
       ARRAY(SELECT t.task_name FROM tasks AS t WHERE t.state = 'failed'
              ORDER BY t.task_name) AS failed,
       ARRAY(SELECT t.task_name FROM tasks AS t WHERE t.state = 'skipped'
              ORDER BY t.task_name) AS skipped,
       ARRAY(SELECT t.task_name FROM tasks AS t WHERE t.state = 'cancelled'
              ORDER BY t.task_name) AS cancelled
  FROM workflow_executions AS e
 WHERE e.id = %(id)s::uuid;

-- name: get_execution_result
-- What a finished child execution hands its parent step: the outputs of its completed
-- final tasks (those no other stage depends on), by task name; a with_items task's as a
-- list in item order.
-- plan: index execution_steps_execution_task_key
-- returns: scalar
SELECT coalesce(jsonb_object_agg(r.task_name, r.outputs), '{}'::jsonb)
  FROM (SELECT s.task_name,
               CASE WHEN bool_or(v.with_items IS NOT NULL)
                    THEN jsonb_agg(s.outputs ORDER BY s.task_index)
                    ELSE (array_agg(s.outputs))[1]
               END AS outputs
          FROM execution_steps AS s
          JOIN workflow_version_stages AS v ON v.id = s.version_stage_id
         WHERE s.execution_id = %(id)s::uuid AND s.status = 'completed'
           AND v.dependents = '{}'
         GROUP BY s.task_name) AS r;
