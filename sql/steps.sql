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
       updated_at, queue, concurrency_key, rate_key
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
       updated_at, queue, concurrency_key, rate_key
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
-- Claim up to `limit` due queued steps of running executions in the queues asked for (NULL:
-- every queue) that are not paused, in (priority, available_at, id) order, skipping rows
-- other workers hold; lease them to the worker, count the attempt and open its
-- step_attempts row, all in one statement. Each queue's front is read in claim order from
-- the claim index (which leads with the queue), up to `limit` rows locked per queue, and
-- the best `limit` of those are claimed: the exact global order, at the price of rows of
-- other queues locked (not claimed) until the statement ends. Every queue: the queues
-- holding queued steps, found with one index descent each. What to run comes from the
-- stage snapshot the execution pinned (never the live stage), with `inputs`: the outputs
-- of the steps it depends on by task name (a with_items task's as a list in item order),
-- and the payload of the signal that last woke it as "signal:<name>".
-- The attempt < max_attempts guard keeps one over-budget row (e.g. requeued by hand) from
-- failing every claim on its CHECK.
-- Flow control: a step with a concurrency key runs only with one of its key's slots
-- numbered up to its limit, one with a rate-limit key only with one of its key's slots
-- last used a window ago; the claim locks free slots (SKIP LOCKED: a slot another claim or
-- a release holds is passed over; one freed or taken meanwhile is re-read at its newest
-- version), hands them to the steps of their key in claim order, and leaves the steps it
-- found no slot for queued. Steps of keys with no free slot as this statement's snapshot
-- sees them are passed over unlocked, so they do not crowd out the steps behind them. A
-- start is stamped with the statement's time (the step's and the attempt's started_at, a
-- rate slot's used_at), which a claim inside an older transaction would otherwise backdate.
-- plan: index execution_steps_queue_claim_idx, concurrency_slots_pkey
-- returns: many
-- record: runs.ClaimedStep
WITH RECURSIVE present (name) AS (
    (SELECT s.queue
       FROM execution_steps s
      WHERE s.status = 'queued' AND %(queues)s::text[] IS NULL
      ORDER BY s.queue
      LIMIT 1)
    UNION ALL
    SELECT (SELECT s.queue
              FROM execution_steps s
             WHERE s.status = 'queued' AND s.queue > p.name
             ORDER BY s.queue
             LIMIT 1)
      FROM present p
     WHERE p.name IS NOT NULL
), open AS (
    SELECT w.name
      FROM (SELECT p.name FROM present p WHERE p.name IS NOT NULL AND %(queues)s::text[] IS NULL
            UNION
            SELECT q.name FROM unnest(%(queues)s::text[]) AS q (name)) AS w
     WHERE NOT EXISTS (SELECT 1 FROM queue_states qs WHERE qs.name = w.name AND qs.paused)
), candidates AS MATERIALIZED (
    SELECT f.id, f.priority, f.available_at, f.concurrency_key, f.concurrency_limit,
           f.rate_key, f.rate_limit, f.rate_window
      FROM open o
     CROSS JOIN LATERAL (
           SELECT s.id, s.priority, s.available_at, s.concurrency_key, s.concurrency_limit,
                  s.rate_key, s.rate_limit, s.rate_window
             FROM execution_steps s
             JOIN workflow_executions e ON e.id = s.execution_id
            WHERE s.queue = o.name AND s.status = 'queued' AND s.available_at <= now()
              AND e.status = 'running' AND s.attempt < s.max_attempts
              AND (s.concurrency_key IS NULL
                   OR EXISTS (SELECT 1
                                FROM concurrency_slots k
                               WHERE k.key = s.concurrency_key
                                 AND k.slot <= s.concurrency_limit AND k.step_id IS NULL))
              AND (s.rate_key IS NULL
                   OR EXISTS (SELECT 1
                                FROM rate_slots r
                               WHERE r.key = s.rate_key AND r.slot <= s.rate_limit
                                 AND r.used_at <= statement_timestamp() - s.rate_window))
            ORDER BY s.priority, s.available_at, s.id
            LIMIT %(limit)s::int
              FOR UPDATE OF s SKIP LOCKED
           ) AS f
     ORDER BY f.priority, f.available_at, f.id
     LIMIT %(limit)s::int
), concurrency_taken AS MATERIALIZED (
    -- Per concurrency key: as many free slots as it has candidates, up to their lowest
    -- limit, locked and numbered.
    SELECT k.key, t.slot, row_number() OVER (PARTITION BY k.key ORDER BY t.slot) AS n
      FROM (SELECT c.concurrency_key AS key, min(c.concurrency_limit) AS lim,
                   count(*) AS wanted
              FROM candidates c
             WHERE c.concurrency_key IS NOT NULL
             GROUP BY c.concurrency_key) AS k
     CROSS JOIN LATERAL (
           SELECT cs.slot
             FROM concurrency_slots cs
            WHERE cs.key = k.key AND cs.slot <= k.lim AND cs.step_id IS NULL
            ORDER BY cs.slot
            LIMIT k.wanted
              FOR UPDATE SKIP LOCKED
           ) AS t
), concurrency_fit AS MATERIALIZED (
    -- The candidates without a concurrency key, and the first ones of each key, as many
    -- as it got slots.
    SELECT c.id, c.priority, c.available_at, c.concurrency_key, t.slot AS concurrency_slot,
           c.rate_key, c.rate_limit, c.rate_window
      FROM (SELECT c.id, c.priority, c.available_at, c.concurrency_key, c.rate_key,
                   c.rate_limit, c.rate_window,
                   row_number() OVER (PARTITION BY c.concurrency_key
                                      ORDER BY c.priority, c.available_at, c.id) AS n
              FROM candidates c) AS c
      LEFT JOIN concurrency_taken t ON t.key = c.concurrency_key AND t.n = c.n
     WHERE c.concurrency_key IS NULL OR t.slot IS NOT NULL
), rate_taken AS MATERIALIZED (
    -- Per rate-limit key: as many slots a window old as it has candidates left, up to
    -- their lowest limit, least recently used first, locked and numbered.
    SELECT k.key, t.slot, row_number() OVER (PARTITION BY k.key ORDER BY t.used_at, t.slot) AS n
      FROM (SELECT f.rate_key AS key, min(f.rate_limit) AS lim, max(f.rate_window) AS win,
                   count(*) AS wanted
              FROM concurrency_fit f
             WHERE f.rate_key IS NOT NULL
             GROUP BY f.rate_key) AS k
     CROSS JOIN LATERAL (
           SELECT r.slot, r.used_at
             FROM rate_slots r
            WHERE r.key = k.key AND r.slot <= k.lim
              AND r.used_at <= statement_timestamp() - k.win
            ORDER BY r.used_at
            LIMIT k.wanted
              FOR UPDATE SKIP LOCKED
           ) AS t
), admitted AS MATERIALIZED (
    SELECT f.id, f.concurrency_key, f.concurrency_slot, f.rate_key, t.slot AS rate_slot
      FROM (SELECT f.id, f.concurrency_key, f.concurrency_slot, f.rate_key,
                   row_number() OVER (PARTITION BY f.rate_key
                                      ORDER BY f.priority, f.available_at, f.id) AS n
              FROM concurrency_fit f) AS f
      LEFT JOIN rate_taken t ON t.key = f.rate_key AND t.n = f.n
     WHERE f.rate_key IS NULL OR t.slot IS NOT NULL
), concurrency_held AS (
    UPDATE concurrency_slots cs
       SET step_id = a.id
      FROM admitted a
     WHERE cs.key = a.concurrency_key AND cs.slot = a.concurrency_slot
), rate_used AS (
    UPDATE rate_slots r
       SET used_at = statement_timestamp()
      FROM admitted a
     WHERE r.key = a.rate_key AND r.slot = a.rate_slot
), claimed AS (
    UPDATE execution_steps s
       SET status = 'running', lease_owner = %(worker_id)s::text,
           lease_expires_at = now() + %(lease)s::interval, heartbeat_at = now(),
           started_at = statement_timestamp(), attempt = s.attempt + 1, error = NULL,
           updated_at = now()
      FROM admitted c
     WHERE s.id = c.id
    RETURNING s.id, s.execution_id, s.stage_id, s.version_stage_id, s.task_name, s.task_index,
              s.attempt, s.max_attempts, s.timeout_seconds, s.lease_owner, s.lease_expires_at,
              s.priority, s.available_at, s.queue, s.signal_id
), opened AS (
    INSERT INTO step_attempts (step_id, execution_id, attempt, worker_id, started_at)
    SELECT id, execution_id, attempt, %(worker_id)s::text, statement_timestamp()
      FROM claimed
)
SELECT c.id, c.execution_id, c.stage_id, c.task_name, c.task_index, c.attempt,
       c.max_attempts, c.timeout_seconds, c.lease_owner, c.lease_expires_at,
       v.action_ref, v.config, v.with_items -> c.task_index AS item,
       coalesce(v.depends_on, '{}') AS depends_on,
       coalesce(i.inputs, '{}'::jsonb)
           || CASE WHEN g.id IS NULL THEN '{}'::jsonb
                   ELSE jsonb_build_object('signal:' || g.name, g.payload) END AS inputs,
       c.queue
  FROM claimed c
  -- By primary key, one row each (LIMIT 1: a generic plan made while the statistics said
  -- these tables were small would otherwise hash the whole table for a few rows).
  LEFT JOIN LATERAL (
      SELECT v.action_ref, v.config, v.with_items, v.depends_on, v.workflow_id, v.version
        FROM workflow_version_stages v
       WHERE v.id = c.version_stage_id
       LIMIT 1
  ) v ON true
  LEFT JOIN LATERAL (
      SELECT g.id, g.name, g.payload
        FROM execution_signals g
       WHERE g.id = c.signal_id
       LIMIT 1
  ) g ON true
  LEFT JOIN LATERAL (
      SELECT jsonb_object_agg(
                 dv.name,
                 CASE WHEN dv.with_items IS NULL THEN o.outputs -> 0
                      ELSE coalesce(o.outputs, '[]'::jsonb) END) AS inputs
        FROM workflow_version_stages dv
        LEFT JOIN LATERAL (
            SELECT jsonb_agg(d.outputs ORDER BY d.task_index) AS outputs
              FROM execution_steps d
             WHERE d.execution_id = c.execution_id AND d.task_name = dv.name
        ) o ON true
       WHERE dv.workflow_id = v.workflow_id AND dv.version = v.version
         AND dv.name = ANY (v.depends_on)
  ) i ON true
 ORDER BY c.priority, c.available_at, c.id;

-- name: lock_step_execution
-- Lock the execution of a step for the rest of the transaction: the first lock of every
-- write that finishes, promotes, skips or cancels steps (an execution's row before its
-- steps' rows; a child execution's before its parent's). What the engine needs of it; no
-- row when the step does not exist.
-- plan: index execution_steps_pkey, workflow_executions_pkey
-- returns: one
-- record: runs.ExecutionLock
SELECT e.id, e.status, e.failure_mode, e.parent_step_id
  FROM workflow_executions e
 WHERE e.id = (SELECT s.execution_id FROM execution_steps s WHERE s.id = %(id)s::uuid)
   FOR NO KEY UPDATE OF e;

-- name: lock_step_executions
-- Lock the executions of many steps, in id order (two callers never wait for each other in
-- opposite orders): the lateral lookup locks each execution as the nested loop reaches it,
-- in the order of the sorted ids. Each step and each execution is looked up alone by its
-- primary key (the LIMITs keep the lookups from being merged into joins): a generic plan
-- made while the statistics said few executions existed hashed every execution of the
-- table for a batch of ten (0.4 ms, two thirds of the statement's time).
-- plan: index execution_steps_pkey, workflow_executions_pkey
-- returns: many
-- record: runs.ExecutionLock
SELECT x.id, x.status, x.failure_mode, x.parent_step_id
  FROM (SELECT DISTINCT s.execution_id
          FROM unnest(%(ids)s::uuid[]) AS i (id)
         CROSS JOIN LATERAL (
               SELECT s.execution_id FROM execution_steps AS s WHERE s.id = i.id LIMIT 1
               ) AS s
         ORDER BY s.execution_id) AS d
 CROSS JOIN LATERAL (
       SELECT e.id, e.status, e.failure_mode, e.parent_step_id
         FROM workflow_executions AS e
        WHERE e.id = d.execution_id
        LIMIT 1
          FOR NO KEY UPDATE OF e
       ) AS x
 ORDER BY x.id;

-- name: heartbeat_steps
-- Extend the leases of the steps (ids[i] at attempts[i]) the worker still holds, in one
-- statement; the new expiry of each, no row for a step whose lease was lost.
-- plan: index execution_steps_pkey
-- returns: many
-- record: runs.LeaseExpiry
UPDATE execution_steps AS s
   SET lease_expires_at = now() + %(lease)s::interval, heartbeat_at = now()
  FROM unnest(%(ids)s::uuid[], %(attempts)s::int[]) AS i (id, attempt)
 WHERE s.id = ANY (%(ids)s::uuid[]) AND s.id = i.id AND s.status = 'running'
   AND s.lease_owner = %(worker_id)s::text
   AND s.attempt = i.attempt
RETURNING s.id, s.lease_expires_at;

-- name: complete_steps
-- Complete, in one statement, the steps (ids[i] at attempts[i], with outputs[i]) the worker
-- still holds — or, with worker_id NULL, steps waiting for their child execution — and
-- close their attempts; count each completion down on the pending steps that depend on it,
-- queueing those brought to zero when their execution is running (a paused or cancelled
-- one promotes nothing), and send the workers' wake-up when any was queued. The steps
-- completed; one whose lease was lost has no row.
--
-- Exactly once: the caller holds the rows of the steps' executions (lock_step_executions),
-- which every write that completes, fails, skips or cancels a step of an execution takes
-- first, so those transactions run one after the other; this statement's snapshot, taken
-- after the locks were granted, sees every count they committed. Two dependencies
-- completing at once thus count down in turn, and only the one reaching zero queues the
-- dependent; two in one batch count down together (count(*) per dependent).
-- plan: index execution_steps_pkey
-- returns: many
-- record: runs.CompletedStep
WITH input AS (
    SELECT i.id, i.attempt, i.outputs
      FROM unnest(%(ids)s::uuid[], %(attempts)s::int[], %(outputs)s::jsonb[])
           AS i (id, attempt, outputs)
), done AS (
    UPDATE execution_steps AS s
       SET status = 'completed', outputs = i.outputs, lease_owner = NULL,
           lease_expires_at = NULL, completed_at = now(),
           duration_ms = greatest(0, (extract(epoch FROM now() - s.started_at) * 1000)::bigint),
           updated_at = now()
      FROM input AS i
     -- s.id = ANY (ids) as well: it is what lets the primary key find the rows (the
     -- planner cannot see inside unnest, and would scan every running step instead).
     WHERE s.id = ANY (%(ids)s::uuid[]) AND s.id = i.id
       AND CASE WHEN %(worker_id)s::text IS NULL THEN s.status = 'waiting'
                ELSE s.status = 'running' AND s.lease_owner = %(worker_id)s::text
                     AND s.attempt = i.attempt END
    RETURNING s.id, s.execution_id, s.attempt, s.version_stage_id
), closed AS (
    UPDATE step_attempts AS a
       SET finished_at = greatest(now(), a.started_at), outcome = 'completed'
      FROM done AS d
     WHERE a.step_id = d.id AND a.attempt = d.attempt AND a.finished_at IS NULL
), counted AS (
    SELECT t.id, count(*)::int AS n, bool_and(e.status = 'running') AS promote
      FROM done AS d
      JOIN workflow_version_stages AS v ON v.id = d.version_stage_id
      JOIN execution_steps AS t
        ON t.execution_id = d.execution_id AND t.task_name = ANY (v.dependents)
      JOIN workflow_executions AS e ON e.id = d.execution_id
     WHERE t.status = 'pending'
     GROUP BY t.id
), promoted AS (
    UPDATE execution_steps AS t
       SET deps_remaining = t.deps_remaining - c.n,
           status = CASE WHEN t.deps_remaining = c.n AND c.promote
                         THEN 'queued' ELSE t.status END,
           available_at = CASE WHEN t.deps_remaining = c.n AND c.promote
                               THEN now() ELSE t.available_at END
      FROM counted AS c
     WHERE t.id = c.id
    RETURNING t.status
), hint AS (
    SELECT pg_notify('flowledger_steps', '') AS sent
      FROM promoted AS p
     WHERE p.status = 'queued'
     LIMIT 1
)
SELECT d.id, d.execution_id
  FROM done AS d
  LEFT JOIN hint ON true;

-- name: fail_steps
-- Record, in one statement, failed attempts (ids[i] at attempts[i], with errors[i]) of steps
-- the worker still holds (or, with worker_id NULL, of steps whose child execution failed,
-- which fail for good): back to 'queued' after a capped exponential backoff with +-20 %%
-- jitter (base * 2^(attempt-1), at most max, from the retry_policy of the pinned stage
-- snapshot) while attempts remain, else 'failed'. One row per step written; none for a
-- step whose lease was lost.
-- plan: index execution_steps_pkey
-- returns: many
-- record: runs.Step
WITH input AS (
    SELECT i.id, i.attempt, i.error
      FROM unnest(%(ids)s::uuid[], %(attempts)s::int[], %(errors)s::text[])
           AS i (id, attempt, error)
), policy AS (
    SELECT i.id, i.attempt, i.error,
           coalesce((v.retry_policy ->> 'backoff_base_seconds')::float8, 1) AS base,
           coalesce((v.retry_policy ->> 'backoff_max_seconds')::float8, 300) AS cap,
           %(worker_id)s::text IS NOT NULL AND s.attempt < s.max_attempts AS again
      FROM input AS i
      JOIN execution_steps AS s ON s.id = i.id AND s.id = ANY (%(ids)s::uuid[])
      LEFT JOIN workflow_version_stages AS v ON v.id = s.version_stage_id
), failed AS (
    UPDATE execution_steps AS s
       SET status = CASE WHEN p.again THEN 'queued' ELSE 'failed' END,
           available_at = CASE
               WHEN p.again THEN now() + make_interval(
                   secs => least(p.cap, p.base * power(2, s.attempt - 1))
                           * (0.8 + 0.4 * random()))
               ELSE s.available_at
           END,
           completed_at = CASE WHEN p.again THEN NULL ELSE now() END,
           error = p.error, lease_owner = NULL, lease_expires_at = NULL
      FROM policy AS p
     WHERE s.id = ANY (%(ids)s::uuid[]) AND s.id = p.id
       AND CASE WHEN %(worker_id)s::text IS NULL THEN s.status = 'waiting'
                ELSE s.status = 'running' AND s.lease_owner = %(worker_id)s::text
                     AND s.attempt = p.attempt END
    RETURNING s.id, s.execution_id, s.stage_id, s.task_name, s.task_index, s.status,
              s.priority, s.attempt, s.max_attempts, s.available_at, s.timeout_seconds,
              s.lease_owner, s.lease_expires_at, s.heartbeat_at, s.started_at,
              s.completed_at, s.duration_ms, s.outputs, s.error, s.created_at, s.updated_at,
              s.queue, s.concurrency_key, s.rate_key
), closed AS (
    UPDATE step_attempts AS a
       SET finished_at = greatest(now(), a.started_at), outcome = 'failed', error = f.error
      FROM failed AS f
     WHERE a.step_id = f.id AND a.attempt = f.attempt AND a.finished_at IS NULL
)
SELECT id, execution_id, stage_id, task_name, task_index, status, priority, attempt,
       max_attempts, available_at, timeout_seconds, lease_owner, lease_expires_at,
       heartbeat_at, started_at, completed_at, duration_ms, outputs, error, created_at,
       updated_at, queue, concurrency_key, rate_key
  FROM failed;

-- name: requeue_expired_steps
-- Reaper, leases: running steps whose lease expired (a batch) go back to 'queued' while
-- attempts remain, else to 'failed'; their attempt is closed as 'lease_lost'. Their
-- executions are locked first (the engine's lock order), skipping those another transaction
-- holds, and then the steps, skipping those another transaction holds: what is skipped is
-- left for the next pass.
-- plan: index execution_steps_lease_expiry_idx
-- returns: many
-- record: runs.Step
WITH due AS MATERIALIZED (
    SELECT id, execution_id
      FROM execution_steps
     WHERE status = 'running' AND lease_expires_at < now()
     ORDER BY lease_expires_at
     LIMIT %(batch)s::int
), held AS MATERIALIZED (
    SELECT e.id
      FROM workflow_executions e
     WHERE e.id IN (SELECT execution_id FROM due)
     ORDER BY e.id
       FOR NO KEY UPDATE OF e SKIP LOCKED
), expired AS MATERIALIZED (
    SELECT s.id, s.attempt
      FROM execution_steps s
     WHERE s.id IN (SELECT d.id FROM due d JOIN held h ON h.id = d.execution_id)
       AND s.status = 'running' AND s.lease_expires_at < now()
       FOR NO KEY UPDATE OF s SKIP LOCKED
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
              s.completed_at, s.duration_ms, s.outputs, s.error, s.created_at, s.updated_at,
              s.queue, s.concurrency_key, s.rate_key
), closed AS (
    UPDATE step_attempts a
       SET finished_at = greatest(now(), a.started_at), outcome = 'lease_lost',
           error = 'lease expired'
      FROM expired x
     WHERE a.step_id = x.id AND a.attempt = x.attempt AND a.finished_at IS NULL
), hint AS (
    SELECT pg_notify('flowledger_steps', '') AS sent
      FROM (SELECT 1 FROM reaped AS r WHERE r.status = 'queued' LIMIT 1) AS any_queued
)
SELECT id, execution_id, stage_id, task_name, task_index, status, priority, attempt,
       max_attempts, available_at, timeout_seconds, lease_owner, lease_expires_at,
       heartbeat_at, started_at, completed_at, duration_ms, outputs, error, created_at,
       updated_at, queue, concurrency_key, rate_key
  FROM reaped
  LEFT JOIN hint ON true;

-- name: expire_timed_out_steps
-- Reaper, timeouts: running steps past started_at + timeout_seconds (a batch) go back to
-- 'queued' while attempts remain, else become 'timed_out'; their attempt is closed as
-- 'timed_out'. Locks as requeue_expired_steps. timeout_seconds >= 1, so
-- started_at < now() - 1 s bounds the index scan.
-- plan: index execution_steps_running_started_idx
-- returns: many
-- record: runs.Step
WITH due AS MATERIALIZED (
    SELECT id, execution_id
      FROM execution_steps
     WHERE status = 'running' AND started_at < now() - interval '1 second'
       AND started_at + make_interval(secs => timeout_seconds) < now()
     ORDER BY started_at
     LIMIT %(batch)s::int
), held AS MATERIALIZED (
    SELECT e.id
      FROM workflow_executions e
     WHERE e.id IN (SELECT execution_id FROM due)
     ORDER BY e.id
       FOR NO KEY UPDATE OF e SKIP LOCKED
), overdue AS MATERIALIZED (
    SELECT s.id, s.attempt
      FROM execution_steps s
     WHERE s.id IN (SELECT d.id FROM due d JOIN held h ON h.id = d.execution_id)
       AND s.status = 'running'
       AND s.started_at + make_interval(secs => s.timeout_seconds) < now()
       FOR NO KEY UPDATE OF s SKIP LOCKED
), expired AS (
    UPDATE execution_steps s
       SET status = CASE WHEN s.attempt < s.max_attempts THEN 'queued' ELSE 'timed_out' END,
           available_at = now(),
           completed_at = CASE WHEN s.attempt < s.max_attempts THEN NULL ELSE now() END,
           error = 'timed out after ' || s.timeout_seconds || ' s',
           lease_owner = NULL, lease_expires_at = NULL
      FROM overdue o
     WHERE s.id = o.id
    RETURNING s.id, s.execution_id, s.stage_id, s.task_name, s.task_index, s.status,
              s.priority, s.attempt, s.max_attempts, s.available_at, s.timeout_seconds,
              s.lease_owner, s.lease_expires_at, s.heartbeat_at, s.started_at,
              s.completed_at, s.duration_ms, s.outputs, s.error, s.created_at, s.updated_at,
              s.queue, s.concurrency_key, s.rate_key
), closed AS (
    UPDATE step_attempts a
       SET finished_at = greatest(now(), a.started_at), outcome = 'timed_out',
           error = 'timed out'
      FROM overdue o
     WHERE a.step_id = o.id AND a.attempt = o.attempt AND a.finished_at IS NULL
), hint AS (
    SELECT pg_notify('flowledger_steps', '') AS sent
      FROM (SELECT 1 FROM expired AS r WHERE r.status = 'queued' LIMIT 1) AS any_queued
)
SELECT id, execution_id, stage_id, task_name, task_index, status, priority, attempt,
       max_attempts, available_at, timeout_seconds, lease_owner, lease_expires_at,
       heartbeat_at, started_at, completed_at, duration_ms, outputs, error, created_at,
       updated_at, queue, concurrency_key, rate_key
  FROM expired
  LEFT JOIN hint ON true;

-- name: find_pending_retries
-- Steps waiting out a retry backoff at the given time, soonest due first.
-- plan: index execution_steps_retry_idx
-- returns: many
-- record: runs.Step
SELECT id, execution_id, stage_id, task_name, task_index, status, priority, attempt,
       max_attempts, available_at, timeout_seconds, lease_owner, lease_expires_at,
       heartbeat_at, started_at, completed_at, duration_ms, outputs, error, created_at,
       updated_at, queue, concurrency_key, rate_key
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
       updated_at, queue, concurrency_key, rate_key
  FROM execution_steps
 WHERE status = 'running' AND started_at < %(now)s::timestamptz - interval '1 second'
   AND started_at + make_interval(secs => timeout_seconds) < %(now)s::timestamptz
 ORDER BY started_at
 LIMIT %(limit)s::int;

-- name: update_steps_status
-- Set the status of many steps in one statement (not 'running': only a claim leases);
-- illegal transitions are refused by execution_steps_status_transition. Steps queued wake
-- the workers. The number changed.
-- plan: index execution_steps_pkey
-- returns: scalar
WITH changed AS (
    UPDATE execution_steps
       SET status = %(status)s::text, lease_owner = NULL, lease_expires_at = NULL,
           available_at = CASE WHEN %(status)s::text = 'queued' THEN now() ELSE available_at END,
           completed_at = CASE
               WHEN %(status)s::text IN ('pending', 'queued') THEN NULL
               ELSE coalesce(completed_at, now())
           END
     WHERE id = ANY(%(ids)s::uuid[])
    RETURNING status
), hint AS (
    SELECT pg_notify('flowledger_steps', '') AS sent
      FROM (SELECT 1 FROM changed AS c WHERE c.status = 'queued' LIMIT 1) AS any_queued
)
SELECT count(*) FROM changed LEFT JOIN hint ON true;

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

-- name: skip_downstream_steps
-- A step failed for good: every pending step that depends on it, directly or through
-- others (the snapshot's downstream), is skipped with the reason. The caller holds the
-- executions' rows.
-- plan: index execution_steps_pkey, execution_steps_execution_task_key
-- returns: rowcount
UPDATE execution_steps AS t
   SET status = 'skipped', completed_at = now(), error = 'upstream failed: ' || f.task_name
  FROM execution_steps AS f
  JOIN workflow_version_stages AS v ON v.id = f.version_stage_id
 WHERE f.id = ANY (%(ids)s::uuid[])
   AND t.execution_id = f.execution_id AND t.task_name = ANY (v.downstream)
   AND t.status = 'pending';

-- name: wait_for_child
-- A running step that started a child execution waits for it: no lease (nothing to
-- expire), not claimable, its attempt still open. Its id, or no row unless it was running.
-- plan: index execution_steps_pkey
-- returns: scalar
UPDATE execution_steps
   SET status = 'waiting', lease_owner = NULL, lease_expires_at = NULL
 WHERE id = %(id)s::uuid AND status = 'running'
RETURNING id;

-- name: list_steps_by_task_name
-- The steps of one task of an execution (one per with_items element), by index.
-- plan: index execution_steps_execution_task_key
-- returns: many
-- record: runs.Step
SELECT id, execution_id, stage_id, task_name, task_index, status, priority, attempt,
       max_attempts, available_at, timeout_seconds, lease_owner, lease_expires_at,
       heartbeat_at, started_at, completed_at, duration_ms, outputs, error, created_at,
       updated_at, queue, concurrency_key, rate_key
  FROM execution_steps
 WHERE execution_id = %(execution_id)s::uuid AND task_name = %(task_name)s::text
 ORDER BY task_index;

-- name: get_step_by_child_execution
-- The step that started a child execution and waits (or waited) for it.
-- plan: index workflow_executions_pkey, execution_steps_pkey
-- returns: one
-- record: runs.Step
SELECT id, execution_id, stage_id, task_name, task_index, status, priority, attempt,
       max_attempts, available_at, timeout_seconds, lease_owner, lease_expires_at,
       heartbeat_at, started_at, completed_at, duration_ms, outputs, error, created_at,
       updated_at, queue, concurrency_key, rate_key
  FROM execution_steps
 WHERE id = (SELECT parent_step_id FROM workflow_executions WHERE id = %(id)s::uuid);

-- name: release_steps
-- Give back claimed steps (ids[i] at attempts[i]) the worker never started: queued again
-- with the attempt count they had before the claim, the claim's attempt row deleted (that
-- attempt never ran), the workers woken. The steps released; none for a step whose lease
-- was lost.
-- plan: index execution_steps_pkey, execution_steps_running_started_idx, execution_steps_lease_expiry_idx
-- returns: many
-- record: runs.ReleasedStep
WITH released AS (
    UPDATE execution_steps AS s
       SET status = 'queued', attempt = s.attempt - 1, lease_owner = NULL,
           lease_expires_at = NULL, available_at = now()
      FROM unnest(%(ids)s::uuid[], %(attempts)s::int[]) AS i (id, attempt)
     WHERE s.id = ANY (%(ids)s::uuid[]) AND s.id = i.id AND s.status = 'running'
       AND s.lease_owner = %(worker_id)s::text
       AND s.attempt = i.attempt
    RETURNING s.id, s.attempt + 1 AS claimed_attempt
), dropped AS (
    DELETE FROM step_attempts AS a
     USING released AS r
     WHERE a.step_id = r.id AND a.attempt = r.claimed_attempt AND a.finished_at IS NULL
), hint AS (
    SELECT pg_notify('flowledger_steps', '') AS sent
      FROM (SELECT 1 FROM released LIMIT 1) AS any_released
)
SELECT r.id FROM released AS r LEFT JOIN hint ON true;

-- name: requeue_sleeping_step
-- A durable timer: the worker that holds a step (id at attempt) ends the attempt with
-- "run me again at `until`": queued with available_at = until (now when that has passed),
-- so no claim takes it before then; the attempt is given back like a release (the count
-- it had before the claim, the claim's attempt row deleted), so sleeping spends no
-- attempt. The workers' wake-up is sent when it is claimable at once. The step; no row
-- when the lease was lost.
-- plan: index execution_steps_pkey
-- returns: one
-- record: runs.Step
WITH slept AS (
    UPDATE execution_steps AS s
       SET status = 'queued', attempt = s.attempt - 1, lease_owner = NULL,
           lease_expires_at = NULL, available_at = greatest(%(until)s::timestamptz, now())
     WHERE s.id = %(id)s::uuid AND s.status = 'running'
       AND s.lease_owner = %(worker_id)s::text AND s.attempt = %(attempt)s::int
    RETURNING s.id, s.execution_id, s.stage_id, s.task_name, s.task_index, s.status,
              s.priority, s.attempt, s.max_attempts, s.available_at, s.timeout_seconds,
              s.lease_owner, s.lease_expires_at, s.heartbeat_at, s.started_at,
              s.completed_at, s.duration_ms, s.outputs, s.error, s.created_at, s.updated_at,
              s.queue, s.concurrency_key, s.rate_key
), dropped AS (
    DELETE FROM step_attempts AS a
     USING slept AS r
     WHERE a.step_id = r.id AND a.attempt = r.attempt + 1 AND a.finished_at IS NULL
), hint AS (
    SELECT pg_notify('flowledger_steps', '') AS sent
      FROM slept AS r
     WHERE r.available_at <= now()
)
SELECT id, execution_id, stage_id, task_name, task_index, status, priority, attempt,
       max_attempts, available_at, timeout_seconds, lease_owner, lease_expires_at,
       heartbeat_at, started_at, completed_at, duration_ms, outputs, error, created_at,
       updated_at, queue, concurrency_key, rate_key
  FROM slept
  LEFT JOIN hint ON true;

-- name: wait_step_for_signal
-- The worker that holds a step (id at attempt) ends the attempt waiting for the signal
-- `name` of its execution: when one is stored unconsumed (sent before the wait), the
-- oldest is consumed at once and the step is queued with it as its input (the workers
-- woken); else the step is waiting (no lease, not claimable) until a send, or until
-- now() + `timeout` (NULL: none) when the reaper queues it without one. Either way the attempt
-- is given back like a release (no attempt spent). The caller holds the execution's row.
-- The step; no row when the lease was lost.
-- plan: index execution_steps_pkey, execution_signals_pending_idx
-- returns: one
-- record: runs.Step
WITH pending AS MATERIALIZED (
    SELECT g.id
      FROM execution_signals g
     WHERE g.execution_id = (SELECT x.execution_id FROM execution_steps x
                              WHERE x.id = %(id)s::uuid)
       AND g.name = %(name)s::text AND g.consumed_at IS NULL
     ORDER BY g.id
     LIMIT 1
       FOR UPDATE
), waited AS (
    UPDATE execution_steps AS s
       SET status = CASE WHEN p.id IS NULL THEN 'waiting' ELSE 'queued' END,
           attempt = s.attempt - 1, lease_owner = NULL, lease_expires_at = NULL,
           available_at = now(), signal_name = %(name)s::text, signal_id = p.id,
           signal_deadline = CASE WHEN p.id IS NULL THEN now() + %(timeout)s::interval END
      FROM (SELECT 1) AS one
      LEFT JOIN pending AS p ON true
     WHERE s.id = %(id)s::uuid AND s.status = 'running'
       AND s.lease_owner = %(worker_id)s::text AND s.attempt = %(attempt)s::int
    RETURNING s.id, s.execution_id, s.stage_id, s.task_name, s.task_index, s.status,
              s.priority, s.attempt, s.max_attempts, s.available_at, s.timeout_seconds,
              s.lease_owner, s.lease_expires_at, s.heartbeat_at, s.started_at,
              s.completed_at, s.duration_ms, s.outputs, s.error, s.created_at, s.updated_at,
              s.queue, s.concurrency_key, s.rate_key, s.signal_id
), consumed AS (
    UPDATE execution_signals AS g
       SET consumed_by = w.id, consumed_at = now()
      FROM waited AS w
     WHERE g.id = w.signal_id
), dropped AS (
    DELETE FROM step_attempts AS a
     USING waited AS r
     WHERE a.step_id = r.id AND a.attempt = r.attempt + 1 AND a.finished_at IS NULL
), hint AS (
    SELECT pg_notify('flowledger_steps', '') AS sent
      FROM waited AS r
     WHERE r.status = 'queued'
)
SELECT id, execution_id, stage_id, task_name, task_index, status, priority, attempt,
       max_attempts, available_at, timeout_seconds, lease_owner, lease_expires_at,
       heartbeat_at, started_at, completed_at, duration_ms, outputs, error, created_at,
       updated_at, queue, concurrency_key, rate_key
  FROM waited
  LEFT JOIN hint ON true;

-- name: queue_overdue_waits
-- Reaper, signal deadlines: steps waiting for a signal past their deadline (a batch) are
-- queued without one (no signal among their inputs); the workers are woken. Their
-- executions are locked first, skipping those another transaction holds (a send holds its
-- execution's row), then the steps: what is skipped is left for the next pass.
-- plan: index execution_steps_signal_deadline_idx
-- returns: many
-- record: runs.Step
WITH due AS MATERIALIZED (
    SELECT id, execution_id
      FROM execution_steps
     WHERE status = 'waiting' AND signal_deadline < now()
     ORDER BY signal_deadline
     LIMIT %(batch)s::int
), held AS MATERIALIZED (
    SELECT e.id
      FROM workflow_executions e
     WHERE e.id IN (SELECT execution_id FROM due)
     ORDER BY e.id
       FOR NO KEY UPDATE OF e SKIP LOCKED
), overdue AS MATERIALIZED (
    SELECT s.id
      FROM execution_steps s
     WHERE s.id IN (SELECT d.id FROM due d JOIN held h ON h.id = d.execution_id)
       AND s.status = 'waiting' AND s.signal_deadline < now()
       FOR NO KEY UPDATE OF s SKIP LOCKED
), woken AS (
    UPDATE execution_steps s
       SET status = 'queued', available_at = now(), signal_deadline = NULL, signal_id = NULL
      FROM overdue o
     WHERE s.id = o.id
    RETURNING s.id, s.execution_id, s.stage_id, s.task_name, s.task_index, s.status,
              s.priority, s.attempt, s.max_attempts, s.available_at, s.timeout_seconds,
              s.lease_owner, s.lease_expires_at, s.heartbeat_at, s.started_at,
              s.completed_at, s.duration_ms, s.outputs, s.error, s.created_at, s.updated_at,
              s.queue, s.concurrency_key, s.rate_key
), hint AS (
    SELECT pg_notify('flowledger_steps', '') AS sent
      FROM (SELECT 1 FROM woken LIMIT 1) AS any_woken
)
SELECT id, execution_id, stage_id, task_name, task_index, status, priority, attempt,
       max_attempts, available_at, timeout_seconds, lease_owner, lease_expires_at,
       heartbeat_at, started_at, completed_at, duration_ms, outputs, error, created_at,
       updated_at, queue, concurrency_key, rate_key
  FROM woken
  LEFT JOIN hint ON true;
