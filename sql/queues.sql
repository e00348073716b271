-- Queues: the queue a step runs in comes from its stage; a paused queue's steps stay queued
-- and no claim takes them (claim_steps skips the queues queue_states says are paused).

-- name: set_queue_paused
-- Pause a queue (recorded even before any step uses it): claims that start after this
-- commits take none of its steps. The queue's state.
-- returns: one
-- record: runs.QueueMark
INSERT INTO queue_states AS q (name, paused)
VALUES (%(name)s::text, true)
    ON CONFLICT (name) DO UPDATE SET paused = true
RETURNING q.name, q.paused, q.updated_at;

-- name: set_queue_running
-- Resume a queue; the workers' wake-up is sent when it holds queued steps. The queue's
-- state.
-- plan: index execution_steps_queue_claim_idx
-- returns: one
-- record: runs.QueueMark
WITH resumed AS (
    INSERT INTO queue_states AS q (name, paused)
    VALUES (%(name)s::text, false)
        ON CONFLICT (name) DO UPDATE SET paused = false
    RETURNING q.name, q.paused, q.updated_at
), hint AS (
    SELECT pg_notify('flowledger_steps', '') AS sent
     WHERE EXISTS (SELECT 1 FROM execution_steps s
                    WHERE s.queue = %(name)s::text AND s.status = 'queued')
)
SELECT r.name, r.paused, r.updated_at
  FROM resumed AS r
  LEFT JOIN hint ON true;

-- name: list_queues
-- Every queue holding queued or running steps, or ever paused or resumed, by name: paused
-- or not, since when (NULL: never paused), and its queued and running steps (counted from
-- the claim index and the running steps' index: the cost grows with those steps, not with
-- the table).
-- plan: index execution_steps_queue_claim_idx, execution_steps_running_started_idx
-- returns: many
-- record: runs.QueueState
WITH live AS (
    SELECT s.queue AS name, count(*) FILTER (WHERE s.kind = 'queued') AS queued,
           count(*) FILTER (WHERE s.kind = 'running') AS running
      FROM (SELECT q.queue, 'queued' AS kind FROM execution_steps q WHERE q.status = 'queued'
            UNION ALL
            SELECT r.queue, 'running' FROM execution_steps r WHERE r.status = 'running') AS s
     GROUP BY s.queue
)
SELECT coalesce(l.name, q.name) AS name, coalesce(q.paused, false) AS paused,
       coalesce(l.queued, 0) AS queued, coalesce(l.running, 0) AS running,
       q.updated_at
  FROM live AS l
  FULL JOIN queue_states AS q ON q.name = l.name
 ORDER BY 1;
