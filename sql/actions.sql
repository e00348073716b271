-- Actions: what a workflow stage runs, either an entrypoint or another workflow.

-- name: insert_action
-- Create an action of a pack; a duplicate ref violates actions_ref_key, an unknown pack
-- actions_pack_id_fkey.
-- returns: one
-- record: catalog.Action
INSERT INTO actions (pack_id, ref, entrypoint, description, param_schema, out_schema)
VALUES (%(pack_id)s::uuid, %(ref)s::text, %(entrypoint)s::text, %(description)s::text,
        %(param_schema)s::jsonb, %(out_schema)s::jsonb)
RETURNING id, pack_id, ref, entrypoint, description, param_schema, out_schema,
          is_workflow, workflow_id, created_at, updated_at;

-- name: get_action_by_id
-- One action by id.
-- plan: index actions_pkey
-- returns: one
-- record: catalog.Action
SELECT id, pack_id, ref, entrypoint, description, param_schema, out_schema,
       is_workflow, workflow_id, created_at, updated_at
  FROM actions
 WHERE id = %(id)s::uuid;

-- name: get_action_by_ref
-- One action by ref ("<pack>.<action>").
-- plan: index actions_ref_key
-- returns: one
-- record: catalog.Action
SELECT id, pack_id, ref, entrypoint, description, param_schema, out_schema,
       is_workflow, workflow_id, created_at, updated_at
  FROM actions
 WHERE ref = %(ref)s::text;

-- name: list_actions_by_pack
-- Every action of one pack, in ref order.
-- plan: index actions_pack_id_idx
-- returns: many
-- record: catalog.Action
SELECT id, pack_id, ref, entrypoint, description, param_schema, out_schema,
       is_workflow, workflow_id, created_at, updated_at
  FROM actions
 WHERE pack_id = %(pack_id)s::uuid
 ORDER BY ref;

-- name: list_workflow_actions
-- Every action implemented by a workflow, in ref order. actions_workflow_link_check makes
-- "workflow_id IS NOT NULL" equivalent to is_workflow; it is what lets the index serve.
-- plan: index actions_workflow_id_idx
-- returns: many
-- record: catalog.Action
SELECT id, pack_id, ref, entrypoint, description, param_schema, out_schema,
       is_workflow, workflow_id, created_at, updated_at
  FROM actions
 WHERE workflow_id IS NOT NULL
   AND is_workflow
 ORDER BY ref;

-- name: get_action_by_workflow
-- The action a workflow implements (the first by ref when several link it).
-- plan: index actions_workflow_id_idx
-- returns: one
-- record: catalog.Action
SELECT id, pack_id, ref, entrypoint, description, param_schema, out_schema,
       is_workflow, workflow_id, created_at, updated_at
  FROM actions
 WHERE workflow_id = %(workflow_id)s::uuid
 ORDER BY ref
 LIMIT 1;

-- name: update_action
-- Change an action's entrypoint, description and/or schemas; NULL keeps the stored value.
-- plan: index actions_pkey
-- returns: one
-- record: catalog.Action
UPDATE actions
   SET entrypoint = coalesce(%(entrypoint)s::text, entrypoint),
       description = coalesce(%(description)s::text, description),
       param_schema = coalesce(%(param_schema)s::jsonb, param_schema),
       out_schema = coalesce(%(out_schema)s::jsonb, out_schema)
 WHERE id = %(id)s::uuid
RETURNING id, pack_id, ref, entrypoint, description, param_schema, out_schema,
          is_workflow, workflow_id, created_at, updated_at;

-- name: set_action_workflow
-- Mark an action as implemented by a workflow, or (NULL workflow_id) as not: both columns
-- in one UPDATE, as actions_workflow_link_check requires.
-- plan: index actions_pkey
-- returns: one
-- record: catalog.Action
UPDATE actions
   SET is_workflow = %(workflow_id)s::uuid IS NOT NULL,
       workflow_id = %(workflow_id)s::uuid
 WHERE id = %(id)s::uuid
RETURNING id, pack_id, ref, entrypoint, description, param_schema, out_schema,
          is_workflow, workflow_id, created_at, updated_at;

-- name: delete_action
-- Delete an action.
-- plan: index actions_pkey
-- returns: rowcount
DELETE FROM actions
 WHERE id = %(id)s::uuid;
