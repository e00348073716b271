-- Steps: claimed, leased, heartbeaten, completed, retried and reaped in place.
-- Every write a worker makes is compare-and-set on (id, status 'running', lease_owner,
-- attempt): a worker that lost its lease changes nothing.

-- name: get_step_by_id
-- One step by id.
-- plan: index execution_steps_pkey
-- returns: one
-- record: runs.Step
SELECT id, execution_id, stage_id, task_name, task_index, status, priority, attempt,
       max_attempts, available_at, timeout_seconds, lease_owner, lease_expires_at,
       heartbeat_at, started_at, completed_at, duration_ms, outputs, error, created_at,
       updated_at
  FROM execution_steps
 WHERE id = %(id)s::uuid;

-- name: list_steps_by_execution
-- The steps of one execution, by task name and fan-out index.
-- plan: index execution_steps_execution_task_key
-- returns: many
-- record: runs.Step
SELECT id, execution_id, stage_id, task_name, task_index, status, priority, attempt,
       max_attempts, available_at, timeout_seconds, lease_owner, lease_expires_at,
       heartbeat_at, started_at, completed_at, duration_ms, outputs, error, created_at,
       updated_at
  FROM execution_steps
 WHERE execution_id = %(execution_id)s::uuid
 ORDER BY task_name, task_index;

-- name: list_step_attempts
-- The attempts of one step, first to last.
-- plan: index step_attempts_step_id_attempt_key
-- returns: many
-- record: runs.StepAttempt
SELECT id, step_id, execution_id, attempt, worker_id, started_at, finished_at, outcome, error
  FROM step_attempts
 WHERE step_id = %(step_id)s::uuid
 ORDER BY attempt;

-- name: claim_steps
-- Claim up to `limit` due queued steps of running executions in (priority, available_at, id)
-- order, skipping rows other workers hold; lease them to the worker, count the attempt and
-- open its step_attempts row, all in one statement. The attempt < max_attempts guard keeps
-- one over-budget row (e.g. requeued by hand) from failing every claim on its CHECK.
-- plan: index execution_steps_claim_idx
-- returns: many
-- record: runs.ClaimedStep
WITH candidates AS MATERIALIZED (
    SELECT s.id
      FROM execution_steps s
      JOIN workflow_executions e ON e.id = s.execution_id
     WHERE s.status = 'queued' AND s.available_at <= now() AND e.status = 'running'
       AND s.attempt < s.max_attempts
     ORDER BY s.priority, s.available_at, s.id
     LIMIT %(limit)s::int
       FOR UPDATE OF s SKIP LOCKED
), claimed AS (
    UPDATE execution_steps s
       SET status = 'running', lease_owner = %(worker_id)s::text,
           lease_expires_at = now() + %(lease)s::interval, heartbeat_at = now(),
           started_at = now(), attempt = s.attempt + 1, error = NULL
      FROM candidates c
     WHERE s.id = c.id
    RETURNING s.id, s.execution_id, s.stage_id, s.task_name, s.task_index, s.attempt,
              s.max_attempts, s.timeout_seconds, s.lease_owner, s.lease_expires_at,
              s.priority, s.available_at
), opened AS (
    INSERT INTO step_attempts (step_id, execution_id, attempt, worker_id)
    SELECT id, execution_id, attempt, %(worker_id)s::text
      FROM claimed
)
SELECT c.id, c.execution_id, c.stage_id, c.task_name, c.task_index, c.attempt,
       c.max_attempts, c.timeout_seconds, c.lease_owner, c.lease_expires_at,
       st.action_ref, st.config, st.with_items -> c.task_index AS item
  FROM claimed c
  LEFT JOIN workflow_stages st ON st.id = c.stage_id
 ORDER BY c.priority, c.available_at, c.id;

-- name: heartbeat_step
-- Extend the lease of a step the worker still holds; its new expiry, or no row.
-- plan: index execution_steps_pkey, execution_steps_running_started_idx, execution_steps_lease_expiry_idx
-- returns: scalar
UPDATE execution_steps
   SET lease_expires_at = now() + %(lease)s::interval, heartbeat_at = now()
 WHERE id = %(id)s::uuid AND status = 'running' AND lease_owner = %(worker_id)s::text
   AND attempt = %(attempt)s::int
RETURNING lease_expires_at;

-- name: complete_step
-- Complete a step the worker still holds (outputs, duration) and close its attempt; the
-- step's execution id, or no row when the lease was lost.
-- plan: index execution_steps_pkey, execution_steps_running_started_idx, execution_steps_lease_expiry_idx
-- returns: scalar
WITH done AS (
    UPDATE execution_steps
       SET status = 'completed', outputs = %(outputs)s::jsonb, lease_owner = NULL,
           lease_expires_at = NULL, completed_at = now(),
           duration_ms = greatest(0, (extract(epoch FROM now() - started_at) * 1000)::bigint)
     WHERE id = %(id)s::uuid AND status = 'running' AND lease_owner = %(worker_id)s::text
       AND attempt = %(attempt)s::int
    RETURNING id, execution_id, attempt
), closed AS (
    UPDATE step_attempts a
       SET finished_at = greatest(now(), a.started_at), outcome = 'completed'
      FROM done d
     WHERE a.step_id = d.id AND a.attempt = d.attempt AND a.finished_at IS NULL
)
SELECT execution_id FROM done;

-- name: fail_step
-- Record a failed attempt of a step the worker still holds: back to 'queued' after a
-- capped exponential backoff with +-20 %% jitter (base * 2^(attempt-1), at most max, from
-- the stage's retry_policy) while attempts remain, else 'failed'. No row when the lease
-- was lost.
-- plan: index execution_steps_pkey, execution_steps_running_started_idx, execution_steps_lease_expiry_idx
-- returns: one
-- record: runs.Step
WITH policy AS (
    SELECT coalesce((st.retry_policy ->> 'backoff_base_seconds')::float8, 1) AS base,
           coalesce((st.retry_policy ->> 'backoff_max_seconds')::float8, 300) AS cap
      FROM execution_steps s
      LEFT JOIN workflow_stages st ON st.id = s.stage_id
     WHERE s.id = %(id)s::uuid
), failed AS (
    UPDATE execution_steps s
       SET status = CASE WHEN s.attempt < s.max_attempts THEN 'queued' ELSE 'failed' END,
           available_at = CASE
               WHEN s.attempt < s.max_attempts THEN now() + make_interval(
                   secs => least(p.cap, p.base * power(2, s.attempt - 1))
                           * (0.8 + 0.4 * random()))
               ELSE s.available_at
           END,
           completed_at = CASE WHEN s.attempt < s.max_attempts THEN NULL ELSE now() END,
           error = %(error)s::text, lease_owner = NULL, lease_expires_at = NULL
      FROM policy p
     WHERE s.id = %(id)s::uuid AND s.status = 'running'
       AND s.lease_owner = %(worker_id)s::text AND s.attempt = %(attempt)s::int
    RETURNING s.id, s.execution_id, s.stage_id, s.task_name, s.task_index, s.status,
              s.priority, s.attempt, s.max_attempts, s.available_at, s.timeout_seconds,
              s.lease_owner, s.lease_expires_at, s.heartbeat_at, s.started_at,
              s.completed_at, s.duration_ms, s.outputs, s.error, s.created_at, s.updated_at
), closed AS (
    UPDATE step_attempts a
       SET finished_at = greatest(now(), a.started_at), outcome = 'failed',
           error = %(error)s::text
      FROM failed f
     WHERE a.step_id = f.id AND a.attempt = f.attempt AND a.finished_at IS NULL
)
SELECT id, execution_id, stage_id, task_name, task_index, status, priority, attempt,
       max_attempts, available_at, timeout_seconds, lease_owner, lease_expires_at,
       heartbeat_at, started_at, completed_at, duration_ms, outputs, error, created_at,
       updated_at
  FROM failed;

-- name: requeue_expired_steps
-- Reaper, leases: running steps whose lease expired (a batch, SKIP LOCKED) go back to
-- 'queued' while attempts remain, else to 'failed'; their attempt is closed as 'lease_lost'.
-- plan: index execution_steps_lease_expiry_idx
-- returns: many
-- record: runs.Step
WITH expired AS MATERIALIZED (
    SELECT id, attempt
      FROM execution_steps
     WHERE status = 'running' AND lease_expires_at < now()
     ORDER BY lease_expires_at
     LIMIT %(batch)s::int
       FOR UPDATE SKIP LOCKED
), reaped AS (
    UPDATE execution_steps s
       SET status = CASE WHEN s.attempt < s.max_attempts THEN 'queued' ELSE 'failed' END,
           available_at = now(),
           completed_at = CASE WHEN s.attempt < s.max_attempts THEN NULL ELSE now() END,
           error = 'lease of ' || s.lease_owner || ' expired',
           lease_owner = NULL, lease_expires_at = NULL
      FROM expired x
     WHERE s.id = x.id
    RETURNING s.id, s.execution_id, s.stage_id, s.task_name, s.task_index, s.status,
              s.priority, s.attempt, s.max_attempts, s.available_at, s.timeout_seconds,
              s.lease_owner, s.lease_expires_at, s.heartbeat_at, s.started_at,
              s.completed_at, s.duration_ms, s.outputs, s.error, s.created_at, s.updated_at
), closed AS (
    UPDATE step_attempts a
       SET finished_at = greatest(now(), a.started_at), outcome = 'lease_lost',
           error = 'lease expired'
      FROM expired x
     WHERE a.step_id = x.id AND a.attempt = x.attempt AND a.finished_at IS NULL
)
SELECT id, execution_id, stage_id, task_name, task_index, status, priority, attempt,
       max_attempts, available_at, timeout_seconds, lease_owner, lease_expires_at,
       heartbeat_at, started_at, completed_at, duration_ms, outputs, error, created_at,
       updated_at
  FROM reaped;

-- name: expire_timed_out_steps
-- Reaper, timeouts: running steps past started_at + timeout_seconds (a batch, SKIP LOCKED)
-- become 'timed_out'; their attempt is closed as 'timed_out'. timeout_seconds >= 1, so
-- started_at < now() - 1 s bounds the index scan.
-- plan: index execution_steps_running_started_idx
-- returns: many
-- record: runs.Step
WITH overdue AS MATERIALIZED (
    SELECT id, attempt
      FROM execution_steps
     WHERE status = 'running' AND started_at < now() - interval '1 second'
       AND started_at + make_interval(secs => timeout_seconds) < now()
     ORDER BY started_at
     LIMIT %(batch)s::int
       FOR UPDATE SKIP LOCKED
), expired AS (
    UPDATE execution_steps s
       SET status = 'timed_out', completed_at = now(),
           error = 'timed out after ' || s.timeout_seconds || ' s',
           lease_owner = NULL, lease_expires_at = NULL
      FROM overdue o
     WHERE s.id = o.id
    RETURNING s.id, s.execution_id, s.stage_id, s.task_name, s.task_index, s.status,
              s.priority, s.attempt, s.max_attempts, s.available_at, s.timeout_seconds,
              s.lease_owner, s.lease_expires_at, s.heartbeat_at, s.started_at,
              s.completed_at, s.duration_ms, s.outputs, s.error, s.created_at, s.updated_at
), closed AS (
    UPDATE step_attempts a
       SET finished_at = greatest(now(), a.started_at), outcome = 'timed_out',
           error = 'timed out'
      FROM overdue o
     WHERE a.step_id = o.id AND a.attempt = o.attempt AND a.finished_at IS NULL
)
SELECT id, execution_id, stage_id, task_name, task_index, status, priority, attempt,
       max_attempts, available_at, timeout_seconds, lease_owner, lease_expires_at,
       heartbeat_at, started_at, completed_at, duration_ms, outputs, error, created_at,
       updated_at
  FROM expired;

-- name: find_pending_retries
-- Steps waiting out a retry backoff at the given time, soonest due first.
-- plan: index execution_steps_retry_idx
-- returns: many
-- record: runs.Step
SELECT id, execution_id, stage_id, task_name, task_index, status, priority, attempt,
       max_attempts, available_at, timeout_seconds, lease_owner, lease_expires_at,
       heartbeat_at, started_at, completed_at, duration_ms, outputs, error, created_at,
       updated_at
  FROM execution_steps
 WHERE status = 'queued' AND attempt > 0 AND available_at > %(now)s::timestamptz
 ORDER BY available_at
 LIMIT %(limit)s::int;

-- name: find_timed_out_steps
-- Running steps past started_at + timeout_seconds at the given time, oldest start first.
-- plan: index execution_steps_running_started_idx
-- returns: many
-- record: runs.Step
SELECT id, execution_id, stage_id, task_name, task_index, status, priority, attempt,
       max_attempts, available_at, timeout_seconds, lease_owner, lease_expires_at,
       heartbeat_at, started_at, completed_at, duration_ms, outputs, error, created_at,
       updated_at
  FROM execution_steps
 WHERE status = 'running' AND started_at < %(now)s::timestamptz - interval '1 second'
   AND started_at + make_interval(secs => timeout_seconds) < %(now)s::timestamptz
 ORDER BY started_at
 LIMIT %(limit)s::int;

-- name: update_steps_status
-- Set the status of many steps in one statement (not 'running': only a claim leases);
-- illegal transitions are refused by execution_steps_status_transition.
-- plan: index execution_steps_pkey
-- returns: rowcount
UPDATE execution_steps
   SET status = %(status)s::text, lease_owner = NULL, lease_expires_at = NULL,
       available_at = CASE WHEN %(status)s::text = 'queued' THEN now() ELSE available_at END,
       completed_at = CASE
           WHEN %(status)s::text IN ('pending', 'queued') THEN NULL
           ELSE coalesce(completed_at, now())
       END
 WHERE id = ANY(%(ids)s::uuid[]);

-- name: close_attempts_of_steps
-- Close the open attempts of steps that are no longer running (after a bulk status change),
-- in a statement of its own so that its snapshot sees every committed claim's attempt row.
-- plan: index execution_steps_pkey
-- returns: rowcount
UPDATE step_attempts a
   SET finished_at = greatest(now(), a.started_at), outcome = %(outcome)s::text
  FROM execution_steps s
 WHERE s.id = ANY(%(ids)s::uuid[]) AND s.status <> 'running'
   AND a.step_id = s.id AND a.finished_at IS NULL;
