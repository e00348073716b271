-- Workflow stages: the ordered steps of a workflow. Every row query returns the columns of
-- records.workflows.Stage in field order. Positions stay 0..n-1: writes that move them
-- first lock the workflow row (lock_* below), so stage edits of one workflow serialize.
-- The unique (workflow_id, position) constraint is DEFERRABLE, hence checked at the end
-- of each statement, not per row: a single UPDATE may shift or permute positions freely.

-- name: list_workflow_stages
-- The stages of one workflow in position order.
-- plan: index workflow_stages_workflow_id_position_key
-- returns: many
-- record: workflows.Stage
SELECT id, workflow_id, position, name, action_ref, depends_on, config, with_items,
       retry_policy, timeout_seconds, queue, concurrency, rate_limit, created_at,
       updated_at
  FROM workflow_stages
 WHERE workflow_id = %(workflow_id)s::uuid
 ORDER BY position;

-- name: get_stage_by_id
-- One stage by primary key.
-- plan: index workflow_stages_pkey
-- returns: one
-- record: workflows.Stage
SELECT id, workflow_id, position, name, action_ref, depends_on, config, with_items,
       retry_policy, timeout_seconds, queue, concurrency, rate_limit, created_at,
       updated_at
  FROM workflow_stages
 WHERE id = %(id)s::uuid;

-- name: lock_stages_workflow
-- Lock a workflow against concurrent stage edits; its id, or no row when the workflow does
-- not exist. NO KEY UPDATE: foreign-key checks of other tables still pass. It counts
-- nothing, since a statement that waited for the lock still reads with the snapshot it
-- took before waiting, so a count here could miss stages an edit committed meanwhile.
-- plan: index workflows_pkey
-- returns: scalar
SELECT w.id
  FROM workflows AS w
 WHERE w.id = %(workflow_id)s::uuid
   FOR NO KEY UPDATE OF w;

-- name: count_workflow_stages
-- The number of a workflow's stages; run after lock_stages_workflow, it sees every edit
-- committed before the lock was granted.
-- plan: index workflow_stages_workflow_id_position_key
-- returns: scalar
SELECT count(*)::int
  FROM workflow_stages
 WHERE workflow_id = %(workflow_id)s::uuid;

-- name: lock_stage_workflow
-- Lock the workflow a stage belongs to (as lock_stages_workflow) and return its id;
-- no row when the stage does not exist.
-- plan: index workflow_stages_pkey, workflows_pkey
-- returns: scalar
SELECT w.id
  FROM workflows AS w
 WHERE w.id = (SELECT s.workflow_id FROM workflow_stages AS s WHERE s.id = %(id)s::uuid)
   FOR NO KEY UPDATE OF w;

-- name: shift_stages_up
-- Make room at a position: move that stage and every later one up by one.
-- plan: index workflow_stages_workflow_id_position_key, workflow_stages_workflow_id_name_key
-- returns: rowcount
UPDATE workflow_stages
   SET position = position + 1
 WHERE workflow_id = %(workflow_id)s::uuid AND position >= %(position)s::int;

-- name: shift_stages_down
-- Close the gap a removed stage left: move every later stage down by one.
-- plan: index workflow_stages_workflow_id_position_key, workflow_stages_workflow_id_name_key
-- returns: rowcount
UPDATE workflow_stages
   SET position = position - 1
 WHERE workflow_id = %(workflow_id)s::uuid AND position > %(position)s::int;

-- name: insert_stage
-- Create a stage at a free position.
-- returns: one
-- record: workflows.Stage
INSERT INTO workflow_stages (workflow_id, position, name, action_ref, depends_on, config,
                             with_items, retry_policy, timeout_seconds, queue, concurrency,
                             rate_limit)
VALUES (%(workflow_id)s::uuid, %(position)s::int, %(name)s::text, %(action_ref)s::text,
        %(depends_on)s::text[], %(config)s::jsonb, %(with_items)s::jsonb,
        %(retry_policy)s::jsonb, %(timeout_seconds)s::int, %(queue)s::text,
        %(concurrency)s::jsonb, %(rate_limit)s::jsonb)
RETURNING id, workflow_id, position, name, action_ref, depends_on, config, with_items,
          retry_policy, timeout_seconds, queue, concurrency, rate_limit, created_at,
       updated_at;

-- name: reorder_stages
-- Renumber a workflow's stages in one statement: each id gets its 0-based index in the
-- ids array. Ids of other workflows match nothing; the caller compares the row count.
-- plan: index workflow_stages_pkey
-- returns: many
-- record: workflows.Stage
WITH moved AS (
    UPDATE workflow_stages AS s
       SET position = (o.ordinality - 1)::int
      FROM unnest(%(ids)s::uuid[]) WITH ORDINALITY AS o (id, ordinality)
     WHERE s.id = o.id AND s.workflow_id = %(workflow_id)s::uuid
    RETURNING s.id, s.workflow_id, s.position, s.name, s.action_ref, s.depends_on, s.config,
              s.with_items, s.retry_policy, s.timeout_seconds, s.queue, s.concurrency,
              s.rate_limit, s.created_at, s.updated_at
)
SELECT id, workflow_id, position, name, action_ref, depends_on, config, with_items,
       retry_policy, timeout_seconds, queue, concurrency, rate_limit, created_at,
       updated_at
  FROM moved
 ORDER BY position;

-- name: delete_stage
-- Delete one stage; its former position, to close the gap (no row when it is gone).
-- plan: index workflow_stages_pkey
-- returns: scalar
DELETE FROM workflow_stages
 WHERE id = %(id)s::uuid
RETURNING position;

-- name: update_stage
-- Change a stage's action, dependencies, config, fan-out, retry policy, timeout, queue or
-- limits; a NULL parameter keeps the column, the set_ flags tell "clear" from "keep" for
-- the nullable with_items, depends_on, concurrency and rate_limit.
-- plan: index workflow_stages_pkey
-- returns: one
-- record: workflows.Stage
UPDATE workflow_stages
   SET action_ref = coalesce(%(action_ref)s::text, action_ref),
       depends_on = CASE WHEN %(set_depends_on)s::boolean
                         THEN %(depends_on)s::text[] ELSE depends_on END,
       config = coalesce(%(config)s::jsonb, config),
       with_items = CASE WHEN %(set_with_items)s::boolean
                         THEN %(with_items)s::jsonb ELSE with_items END,
       retry_policy = coalesce(%(retry_policy)s::jsonb, retry_policy),
       timeout_seconds = coalesce(%(timeout_seconds)s::int, timeout_seconds),
       queue = coalesce(%(queue)s::text, queue),
       concurrency = CASE WHEN %(set_concurrency)s::boolean
                          THEN %(concurrency)s::jsonb ELSE concurrency END,
       rate_limit = CASE WHEN %(set_rate_limit)s::boolean
                         THEN %(rate_limit)s::jsonb ELSE rate_limit END
 WHERE id = %(id)s::uuid
RETURNING id, workflow_id, position, name, action_ref, depends_on, config, with_items,
          retry_policy, timeout_seconds, queue, concurrency, rate_limit, created_at,
       updated_at;

-- name: snapshot_workflow_stages
-- After a stage edit: check the workflow's dependency graph (unknown names, cycles, a
-- removed stage others depend on raise) and make the live stages its current version,
-- bumping the version when they changed (see migration 0012). The current version.
-- returns: scalar
SELECT snapshot_workflow_stages(%(workflow_id)s::uuid);
