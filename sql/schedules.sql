-- Schedules: when workflows triggered by cron rules fire. Rows are kept by triggers on
-- workflows (0019); the scheduler computes next_fire_at, since SQL cannot evaluate cron.

-- name: get_schedule
-- The schedule of one workflow.
-- plan: index workflow_schedules_pkey
-- returns: one
-- record: schedules.Schedule
SELECT s.workflow_id, w.schedule AS rule, s.catch_up, s.max_catch_up, s.rule_set_at,
       s.next_fire_at, s.last_fired_at, s.error, s.created_at, s.updated_at
  FROM workflow_schedules AS s
  JOIN workflows AS w ON w.id = s.workflow_id
 WHERE s.workflow_id = %(workflow_id)s::uuid;

-- name: list_schedules
-- Schedules by workflow id (creation order: ids are UUIDv7), keyset-paginated.
-- plan: index workflow_schedules_pkey
-- returns: many
-- record: schedules.Schedule
SELECT s.workflow_id, w.schedule AS rule, s.catch_up, s.max_catch_up, s.rule_set_at,
       s.next_fire_at, s.last_fired_at, s.error, s.created_at, s.updated_at
  FROM workflow_schedules AS s
  JOIN workflows AS w ON w.id = s.workflow_id
 WHERE (%(after_id)s::uuid IS NULL OR s.workflow_id > %(after_id)s::uuid)
 ORDER BY s.workflow_id
 LIMIT %(limit)s::int + 1;

-- name: update_schedule_policy
-- Sets what a schedule does with missed ticks; NULL keeps a value.
-- plan: index workflow_schedules_pkey
-- returns: rowcount
UPDATE workflow_schedules
   SET catch_up = coalesce(%(catch_up)s::text, catch_up),
       max_catch_up = coalesce(%(max_catch_up)s::int, max_catch_up)
 WHERE workflow_id = %(workflow_id)s::uuid;

-- name: get_schedules_next_fire_at
-- The earliest planned tick of any schedule (NULL: none planned).
-- plan: index workflow_schedules_next_fire_idx
-- returns: scalar
SELECT min(next_fire_at)
  FROM workflow_schedules
 WHERE error IS NULL;

-- name: get_database_now
-- The database's clock (the transaction's start): the one time every scheduler shares.
-- plan: seqscan-ok (no table)
-- returns: scalar
SELECT now();

-- name: claim_unplanned_schedules
-- Schedules whose rule is new or changed (no next tick computed yet), locked for this
-- scheduler; those another scheduler holds are skipped.
-- plan: index workflow_schedules_unplanned_idx
-- returns: many
-- record: schedules.UnplannedSchedule
SELECT s.workflow_id, w.schedule AS rule, s.rule_set_at
  FROM workflow_schedules AS s
  JOIN workflows AS w ON w.id = s.workflow_id
 WHERE s.next_fire_at IS NULL
   AND s.error IS NULL
 LIMIT %(limit)s::int
   FOR NO KEY UPDATE OF s SKIP LOCKED;

-- name: claim_due_schedules
-- Schedules whose next tick is at or before `now`, earliest first, locked for this
-- scheduler (those another scheduler holds are skipped, and a row another scheduler
-- advanced meanwhile is re-read and no longer due). FOR SHARE of the workflow: it cannot
-- be disabled or archived before the executions start.
-- plan: index workflow_schedules_next_fire_idx
-- returns: many
-- record: schedules.DueSchedule
SELECT s.workflow_id, w.schedule AS rule, w.enabled AND w.status = 'active' AS startable,
       s.catch_up, s.max_catch_up, s.next_fire_at
  FROM workflow_schedules AS s
  JOIN workflows AS w ON w.id = s.workflow_id
 WHERE s.next_fire_at <= %(now)s::timestamptz
   AND s.error IS NULL
 ORDER BY s.next_fire_at
 LIMIT %(limit)s::int
   FOR NO KEY UPDATE OF s SKIP LOCKED
   FOR SHARE OF w;

-- name: update_schedules_fired
-- Records what a scheduler did with each claimed schedule (the i-th element of every
-- array): its next tick, the last tick it fired (NULL keeps the stored one), and why its
-- rule cannot be evaluated (NULL when it can).
-- plan: index workflow_schedules_pkey
-- returns: rowcount
UPDATE workflow_schedules AS s
   SET next_fire_at = u.next_fire_at,
       last_fired_at = coalesce(u.last_fired_at, s.last_fired_at),
       error = u.error
  FROM unnest(%(workflow_ids)s::uuid[], %(next_fire_ats)s::timestamptz[],
              %(last_fired_ats)s::timestamptz[], %(errors)s::text[])
       AS u (workflow_id, next_fire_at, last_fired_at, error)
 WHERE s.workflow_id = u.workflow_id;
