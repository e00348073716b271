-- Tasks: planning and work items, and the ordered tasks attached to workflows.

-- name: insert_task
-- Create a task.
-- returns: one
-- record: tasks.Task
INSERT INTO tasks (title, description, task_type, status, config, metadata, workspace_path)
VALUES (%(title)s::text, %(description)s::text, %(task_type)s::text, %(status)s::text,
        %(config)s::jsonb, %(metadata)s::jsonb, %(workspace_path)s::text)
RETURNING id, title, description, task_type, status, config, metadata, workspace_path,
          created_at, updated_at;

-- name: get_task_by_id
-- One task by id.
-- plan: index tasks_pkey
-- returns: one
-- record: tasks.Task
SELECT id, title, description, task_type, status, config, metadata, workspace_path,
       created_at, updated_at
  FROM tasks
 WHERE id = %(id)s::uuid;

-- name: update_task
-- Change a task's fields; NULL keeps the stored value (workspace_path: set_workspace_path
-- says whether to write it, so that NULL can clear it).
-- plan: index tasks_pkey
-- returns: one
-- record: tasks.Task
UPDATE tasks
   SET title = coalesce(%(title)s::text, title),
       description = coalesce(%(description)s::text, description),
       task_type = coalesce(%(task_type)s::text, task_type),
       status = coalesce(%(status)s::text, status),
       config = coalesce(%(config)s::jsonb, config),
       metadata = coalesce(%(metadata)s::jsonb, metadata),
       workspace_path = CASE WHEN %(set_workspace_path)s::boolean
                             THEN %(workspace_path)s::text ELSE workspace_path END
 WHERE id = %(id)s::uuid
RETURNING id, title, description, task_type, status, config, metadata, workspace_path,
          created_at, updated_at;

-- name: delete_task
-- Delete a task and (ON DELETE CASCADE) its attachments to workflows.
-- plan: index tasks_pkey
-- returns: rowcount
DELETE FROM tasks
 WHERE id = %(id)s::uuid;

-- name: list_tasks_by_created_at
-- Tasks created in [created_from, created_to) (either end optional), newest first,
-- keyset-paginated on (created_at, id).
-- plan: index tasks_created_idx
-- returns: many
-- record: tasks.Task
SELECT id, title, description, task_type, status, config, metadata, workspace_path,
       created_at, updated_at
  FROM tasks
 WHERE (%(created_from)s::timestamptz IS NULL OR created_at >= %(created_from)s::timestamptz)
   AND (%(created_to)s::timestamptz IS NULL OR created_at < %(created_to)s::timestamptz)
   AND (%(after_created_at)s::timestamptz IS NULL
        OR (created_at, id) < (%(after_created_at)s::timestamptz, %(after_id)s::uuid))
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s::int + 1;

-- name: list_tasks_by_status
-- The tasks of one status, optionally created in [created_from, created_to), newest
-- first, keyset-paginated on (created_at, id).
-- plan: index tasks_status_created_idx
-- returns: many
-- record: tasks.Task
SELECT id, title, description, task_type, status, config, metadata, workspace_path,
       created_at, updated_at
  FROM tasks
 WHERE status = %(status)s::text
   AND (%(created_from)s::timestamptz IS NULL OR created_at >= %(created_from)s::timestamptz)
   AND (%(created_to)s::timestamptz IS NULL OR created_at < %(created_to)s::timestamptz)
   AND (%(after_created_at)s::timestamptz IS NULL
        OR (created_at, id) < (%(after_created_at)s::timestamptz, %(after_id)s::uuid))
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s::int + 1;

-- name: list_tasks_by_type
-- The tasks of one type, optionally created in [created_from, created_to), newest first,
-- keyset-paginated on (created_at, id).
-- plan: index tasks_task_type_created_idx
-- returns: many
-- record: tasks.Task
SELECT id, title, description, task_type, status, config, metadata, workspace_path,
       created_at, updated_at
  FROM tasks
 WHERE task_type = %(task_type)s::text
   AND (%(created_from)s::timestamptz IS NULL OR created_at >= %(created_from)s::timestamptz)
   AND (%(created_to)s::timestamptz IS NULL OR created_at < %(created_to)s::timestamptz)
   AND (%(after_created_at)s::timestamptz IS NULL
        OR (created_at, id) < (%(after_created_at)s::timestamptz, %(after_id)s::uuid))
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s::int + 1;

-- name: list_tasks_by_workspace
-- The tasks of one workspace path, optionally created in [created_from, created_to),
-- newest first, keyset-paginated on (created_at, id).
-- plan: index tasks_workspace_created_idx
-- returns: many
-- record: tasks.Task
SELECT id, title, description, task_type, status, config, metadata, workspace_path,
       created_at, updated_at
  FROM tasks
 WHERE workspace_path = %(workspace_path)s::text
   AND (%(created_from)s::timestamptz IS NULL OR created_at >= %(created_from)s::timestamptz)
   AND (%(created_to)s::timestamptz IS NULL OR created_at < %(created_to)s::timestamptz)
   AND (%(after_created_at)s::timestamptz IS NULL
        OR (created_at, id) < (%(after_created_at)s::timestamptz, %(after_id)s::uuid))
 ORDER BY created_at DESC, id DESC
 LIMIT %(limit)s::int + 1;

-- name: count_tasks_by_status
-- Tasks per status (every status in `statuses`, zero included), exact: one range of the
-- status index per status, read index-only.
-- plan: index tasks_status_created_idx
-- returns: many
-- record: metrics.StatusCount
SELECT s.status,
       (SELECT count(*) FROM tasks t WHERE t.status = s.status) AS count
  FROM unnest(%(statuses)s::text[]) WITH ORDINALITY AS s(status, n)
 ORDER BY s.n;

-- ---------------------------------------------------------------
-- Tasks attached to workflows
-- ---------------------------------------------------------------

-- name: lock_workflow_tasks
-- Locks a workflow against concurrent changes of its tasks; its id, or no row when the
-- workflow does not exist. NO KEY UPDATE: foreign-key checks of other tables pass. It
-- counts nothing, since a statement that waited for the lock still reads with the
-- snapshot it took before waiting, so a count here could miss an attach committed meanwhile.
-- plan: index workflows_pkey
-- returns: scalar
SELECT w.id
  FROM workflows AS w
 WHERE w.id = %(workflow_id)s::uuid
   FOR NO KEY UPDATE OF w;

-- name: count_workflow_tasks
-- The number of tasks attached to a workflow; run after lock_workflow_tasks, it sees every
-- attach and detach committed before the lock was granted.
-- plan: index workflow_tasks_workflow_id_sequence_key
-- returns: scalar
SELECT count(*)::int
  FROM workflow_tasks
 WHERE workflow_id = %(workflow_id)s::uuid;

-- name: lock_task_key
-- Keeps a task from being deleted until the transaction ends; its id, or no row.
-- plan: index tasks_pkey
-- returns: scalar
SELECT id
  FROM tasks
 WHERE id = %(id)s::uuid
   FOR KEY SHARE;

-- name: insert_workflow_task
-- Attaches a task to a workflow at a sequence, or (sequence NULL) after its last task.
-- plan: index workflow_tasks_workflow_id_sequence_key
-- returns: one
-- record: tasks.WorkflowTask
WITH attached AS (
    INSERT INTO workflow_tasks (workflow_id, task_id, sequence, config)
    VALUES (%(workflow_id)s::uuid, %(task_id)s::uuid,
            coalesce(%(sequence)s::int,
                     (SELECT coalesce(max(sequence) + 1, 0)
                        FROM workflow_tasks
                       WHERE workflow_id = %(workflow_id)s::uuid)),
            %(config)s::jsonb)
    RETURNING workflow_id, task_id, sequence, config, created_at
)
SELECT a.workflow_id, a.sequence, a.config, a.created_at AS attached_at, to_jsonb(t) AS task
  FROM attached AS a
  JOIN tasks AS t ON t.id = a.task_id;

-- name: delete_workflow_task
-- Detaches a task from a workflow (later tasks keep their sequence).
-- plan: index workflow_tasks_pkey
-- returns: rowcount
DELETE FROM workflow_tasks
 WHERE workflow_id = %(workflow_id)s::uuid
   AND task_id = %(task_id)s::uuid;

-- name: reorder_workflow_tasks
-- Gives a workflow's tasks the sequences 0..n-1 in the order of the list, in one
-- statement. Changes nothing unless every attached task is listed: then the rowcount is
-- the number of attached tasks.
-- plan: index workflow_tasks_pkey
-- returns: rowcount
UPDATE workflow_tasks AS wt
   SET sequence = o.ordinality - 1
  FROM unnest(%(task_ids)s::uuid[]) WITH ORDINALITY AS o (task_id, ordinality)
 WHERE wt.workflow_id = %(workflow_id)s::uuid
   AND wt.task_id = o.task_id
   AND NOT EXISTS (SELECT 1
                     FROM workflow_tasks AS other
                    WHERE other.workflow_id = %(workflow_id)s::uuid
                      AND other.task_id <> ALL(%(task_ids)s::uuid[]));

-- name: list_workflow_tasks
-- The tasks attached to a workflow, in sequence order.
-- plan: index workflow_tasks_workflow_id_sequence_key, tasks_pkey
-- returns: many
-- record: tasks.WorkflowTask
SELECT wt.workflow_id, wt.sequence, wt.config, wt.created_at AS attached_at,
       to_jsonb(t) AS task
  FROM workflow_tasks AS wt
  JOIN tasks AS t ON t.id = wt.task_id
 WHERE wt.workflow_id = %(workflow_id)s::uuid
 ORDER BY wt.sequence;
