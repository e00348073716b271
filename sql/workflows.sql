-- Workflows and their definition versions. Every row query returns the columns of
-- records.workflows.Workflow in field order (all but the generated search vector).
-- Versioned writes are compare-and-set on row_version; workflows.version and the
-- workflow_versions rows belong to the triggers of migration 0004.

-- name: insert_workflow
-- Create a workflow; the insert trigger snapshots its definition as version 1.
-- returns: one
-- record: workflows.Workflow
INSERT INTO workflows (owner_id, pack_id, name, description, status, enabled, trigger_type,
                       schedule, definition_yaml, definition, param_schema, out_schema, tags,
                       failure_mode, max_running_executions)
VALUES (%(owner_id)s::uuid, %(pack_id)s::uuid, %(name)s::text, %(description)s::text,
        %(status)s::text, %(enabled)s::boolean, %(trigger_type)s::text, %(schedule)s::text,
        %(definition_yaml)s::text, %(definition)s::jsonb, %(param_schema)s::jsonb,
        %(out_schema)s::jsonb, %(tags)s::text[], %(failure_mode)s::text,
        %(max_running_executions)s::int)
RETURNING id, owner_id, pack_id, name, description, status, enabled, trigger_type, schedule,
          definition_yaml, definition, param_schema, out_schema, tags, failure_mode,
          max_running_executions, version, row_version, created_at, updated_at;

-- name: get_workflow_by_id
-- One workflow by primary key.
-- plan: index workflows_pkey
-- returns: one
-- record: workflows.Workflow
SELECT id, owner_id, pack_id, name, description, status, enabled, trigger_type, schedule,
       definition_yaml, definition, param_schema, out_schema, tags, failure_mode,
       max_running_executions, version, row_version, created_at, updated_at
  FROM workflows
 WHERE id = %(id)s::uuid;

-- name: get_workflow_by_name
-- One workflow by its natural key: owner and name.
-- plan: index workflows_owner_id_name_key
-- returns: one
-- record: workflows.Workflow
SELECT id, owner_id, pack_id, name, description, status, enabled, trigger_type, schedule,
       definition_yaml, definition, param_schema, out_schema, tags, failure_mode,
       max_running_executions, version, row_version, created_at, updated_at
  FROM workflows
 WHERE owner_id = %(owner_id)s::uuid AND name = %(name)s::text;

-- name: get_workflow_by_ref
-- One workflow by its reference "<owner email>/<name>", the email matched case-insensitively.
-- plan: index users_email_key, workflows_owner_id_name_key
-- returns: one
-- record: workflows.Workflow
SELECT w.id, w.owner_id, w.pack_id, w.name, w.description, w.status, w.enabled,
       w.trigger_type, w.schedule, w.definition_yaml, w.definition, w.param_schema,
       w.out_schema, w.tags, w.failure_mode, w.max_running_executions, w.version, w.row_version,
       w.created_at, w.updated_at
  FROM users AS u
  JOIN workflows AS w ON w.owner_id = u.id
 WHERE lower(u.email) = lower(%(email)s::text) AND w.name = %(name)s::text;

-- name: get_workflow_row_version
-- The current row_version of a workflow (no row when it is gone): tells NotFound from
-- StaleWrite after a compare-and-set touched nothing.
-- plan: index workflows_pkey
-- returns: scalar
SELECT row_version
  FROM workflows
 WHERE id = %(id)s::uuid;

-- name: update_workflow
-- Compare-and-set update of the editable fields; a NULL parameter keeps the column, the
-- set_* flags distinguish "clear" from "keep" for the nullable schedule, pack_id and
-- max_running_executions. A raised (or lifted) cap starts pending executions in this
-- statement (the workflows_run_slots_on_update trigger).
-- plan: index workflows_pkey
-- returns: one
-- record: workflows.Workflow
UPDATE workflows
   SET name = coalesce(%(name)s::text, name),
       description = coalesce(%(description)s::text, description),
       status = coalesce(%(status)s::text, status),
       enabled = coalesce(%(enabled)s::boolean, enabled),
       trigger_type = coalesce(%(trigger_type)s::text, trigger_type),
       schedule = CASE WHEN %(set_schedule)s::boolean THEN %(schedule)s::text ELSE schedule END,
       pack_id = CASE WHEN %(set_pack_id)s::boolean THEN %(pack_id)s::uuid ELSE pack_id END,
       param_schema = coalesce(%(param_schema)s::jsonb, param_schema),
       out_schema = coalesce(%(out_schema)s::jsonb, out_schema),
       tags = coalesce(%(tags)s::text[], tags),
       failure_mode = coalesce(%(failure_mode)s::text, failure_mode),
       max_running_executions = CASE WHEN %(set_max_running_executions)s::boolean
                                     THEN %(max_running_executions)s::int
                                     ELSE max_running_executions END,
       row_version = row_version + 1
 WHERE id = %(id)s::uuid AND row_version = %(expected_version)s::int
RETURNING id, owner_id, pack_id, name, description, status, enabled, trigger_type, schedule,
          definition_yaml, definition, param_schema, out_schema, tags, failure_mode,
          max_running_executions, version, row_version, created_at, updated_at;

-- name: update_workflow_definition
-- Compare-and-set replacement of the definition; when it differs, the version trigger
-- bumps version and writes the workflow_versions snapshot in the same statement.
-- plan: index workflows_pkey
-- returns: one
-- record: workflows.Workflow
UPDATE workflows
   SET definition_yaml = %(definition_yaml)s::text,
       definition = %(definition)s::jsonb,
       row_version = row_version + 1
 WHERE id = %(id)s::uuid AND row_version = %(expected_version)s::int
RETURNING id, owner_id, pack_id, name, description, status, enabled, trigger_type, schedule,
          definition_yaml, definition, param_schema, out_schema, tags, failure_mode,
          max_running_executions, version, row_version, created_at, updated_at;

-- name: update_workflow_archived
-- Compare-and-set archive: status archived and disabled, so nothing triggers it any more.
-- plan: index workflows_pkey
-- returns: one
-- record: workflows.Workflow
UPDATE workflows
   SET status = 'archived',
       enabled = false,
       row_version = row_version + 1
 WHERE id = %(id)s::uuid AND row_version = %(expected_version)s::int
RETURNING id, owner_id, pack_id, name, description, status, enabled, trigger_type, schedule,
          definition_yaml, definition, param_schema, out_schema, tags, failure_mode,
          max_running_executions, version, row_version, created_at, updated_at;

-- name: delete_workflow
-- Delete a workflow; its versions, stages and executions go with it (ON DELETE CASCADE).
-- plan: index workflows_pkey
-- returns: rowcount
DELETE FROM workflows
 WHERE id = %(id)s::uuid;

-- name: list_workflows_by_updated_at
-- Workflows matching any combination of optional filters, most recently edited first,
-- keyset-paginated on (updated_at, id). A NULL filter parameter is folded away by the
-- planner (custom plans), so the filters that are set keep their indexes.
-- plan: index workflows_updated_idx
-- returns: many
-- record: workflows.Workflow
SELECT id, owner_id, pack_id, name, description, status, enabled, trigger_type, schedule,
       definition_yaml, definition, param_schema, out_schema, tags, failure_mode,
       max_running_executions, version, row_version, created_at, updated_at
  FROM workflows
 WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
   AND (%(owner_id)s::uuid IS NULL OR owner_id = %(owner_id)s::uuid)
   AND (%(pack_id)s::uuid IS NULL OR pack_id = %(pack_id)s::uuid)
   AND (%(enabled)s::boolean IS NULL OR enabled = %(enabled)s::boolean)
   AND (%(trigger_type)s::text IS NULL OR trigger_type = %(trigger_type)s::text)
   AND (%(tags_all)s::text[] IS NULL OR tags @> %(tags_all)s::text[])
   AND (%(tags_any)s::text[] IS NULL OR tags && %(tags_any)s::text[])
   -- name is indexed with 'simple', description with 'english': match either reading.
   AND (%(search)s::text IS NULL
        OR search @@ (websearch_to_tsquery('english'::regconfig, %(search)s::text)
                      || websearch_to_tsquery('simple'::regconfig, %(search)s::text)))
   AND (%(created_from)s::timestamptz IS NULL OR created_at >= %(created_from)s::timestamptz)
   AND (%(created_to)s::timestamptz IS NULL OR created_at < %(created_to)s::timestamptz)
   AND (%(updated_from)s::timestamptz IS NULL OR updated_at >= %(updated_from)s::timestamptz)
   AND (%(updated_to)s::timestamptz IS NULL OR updated_at < %(updated_to)s::timestamptz)
   AND (%(after_updated_at)s::timestamptz IS NULL
        OR (updated_at, id) < (%(after_updated_at)s::timestamptz, %(after_id)s::uuid))
 ORDER BY updated_at DESC, id DESC
 LIMIT %(limit)s::int + 1;

-- name: list_workflows_by_created_at
-- Workflows matching any combination of optional filters, newest first, keyset-paginated
-- on (created_at, id). Same filters as list_workflows_by_updated_at.
-- plan: index workflows_created_idx
-- returns: many
-- record: workflows.Workflow
SELECT id, owner_id, pack_id, name, description, status, enabled, trigger_type, schedule,
       definition_yaml, definition, param_schema, out_schema, tags, failure_mode,
       max_running_executions, version, row_version, created_at, updated_at
  FROM workflows
 WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
   AND (%(owner_id)s::uuid IS NULL OR owner_id = %(owner_id)s::uuid)
   AND (%(pack_id)s::uuid IS NULL OR pack_id = %(pack_id)s::uuid)
   AND (%(enabled)s::boolean IS NULL OR enabled = %(enabled)s::boolean)
   AND (%(trigger_type)s::text IS NULL OR trigger_type = %(trigger_type)s::text)
   AND (%(tags_all)s::text[] IS NULL OR tags @> %(tags_all)s::text[])
   AND (%(tags_any)s::text[] IS NULL OR tags && %(tags_any)s::text[])
   AND (%(search)s::text IS NULL
        OR search @@ (websearch_to_tsquery('english'::regconfig, %(search)s::text)
                      || websearch_to_tsquery('simple'::regconfig, %(search)s::text)))
   AND (%(created_from)s::timestamptz IS NULL OR created_at >= %(created_from)s::timestamptz)
   AND (%(created_to)s::timestamptz IS NULL OR created_at < %(created_to)s::timestamptz)
   AND (%(updated_from)s::timestamptz IS NULL OR updated_at >= %(updated_from)s::timestamptz)
   AND (%(updated_to)s::timestamptz IS NULL OR updated_at < %(updated_to)s::timestamptz)
   AND (%(after_created_at)s::timestamptz IS NULL
        OR (created_at, id) < (%(after_created_at)s::timestamptz, %(after_id)s::uuid))
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s::int + 1;

-- name: list_workflows_by_name
-- Workflows matching any combination of optional filters, by name (then id), keyset-
-- paginated on (name, id). Same filters as list_workflows_by_updated_at. With an owner,
-- workflows_owner_id_name_key yields the order; a set filter uses its index.
-- plan: index workflows_name_idx
-- returns: many
-- record: workflows.Workflow
SELECT id, owner_id, pack_id, name, description, status, enabled, trigger_type, schedule,
       definition_yaml, definition, param_schema, out_schema, tags, failure_mode,
       max_running_executions, version, row_version, created_at, updated_at
  FROM workflows
 WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
   AND (%(owner_id)s::uuid IS NULL OR owner_id = %(owner_id)s::uuid)
   AND (%(pack_id)s::uuid IS NULL OR pack_id = %(pack_id)s::uuid)
   AND (%(enabled)s::boolean IS NULL OR enabled = %(enabled)s::boolean)
   AND (%(trigger_type)s::text IS NULL OR trigger_type = %(trigger_type)s::text)
   AND (%(tags_all)s::text[] IS NULL OR tags @> %(tags_all)s::text[])
   AND (%(tags_any)s::text[] IS NULL OR tags && %(tags_any)s::text[])
   AND (%(search)s::text IS NULL
        OR search @@ (websearch_to_tsquery('english'::regconfig, %(search)s::text)
                      || websearch_to_tsquery('simple'::regconfig, %(search)s::text)))
   AND (%(created_from)s::timestamptz IS NULL OR created_at >= %(created_from)s::timestamptz)
   AND (%(created_to)s::timestamptz IS NULL OR created_at < %(created_to)s::timestamptz)
   AND (%(updated_from)s::timestamptz IS NULL OR updated_at >= %(updated_from)s::timestamptz)
   AND (%(updated_to)s::timestamptz IS NULL OR updated_at < %(updated_to)s::timestamptz)
   AND (%(after_name)s::text IS NULL OR (name, id) > (%(after_name)s::text, %(after_id)s::uuid))
 ORDER BY name, id
 LIMIT %(limit)s::int + 1;

-- name: list_workflow_versions
-- Every definition snapshot of one workflow, oldest first.
-- plan: index workflow_versions_workflow_id_version_key
-- returns: many
-- record: workflows.WorkflowVersion
SELECT id, workflow_id, version, definition_yaml, definition, created_at
  FROM workflow_versions
 WHERE workflow_id = %(workflow_id)s::uuid
 ORDER BY version;

-- name: get_workflow_version
-- One definition snapshot: the exact definition an execution pinned.
-- plan: index workflow_versions_workflow_id_version_key
-- returns: one
-- record: workflows.WorkflowVersion
SELECT id, workflow_id, version, definition_yaml, definition, created_at
  FROM workflow_versions
 WHERE workflow_id = %(workflow_id)s::uuid AND version = %(version)s::int;
