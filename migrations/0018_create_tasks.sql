-- Tasks: planning and work items, and their ordered attachment to workflows.
-- depends: 0017_partition_step_logs

CREATE TABLE tasks (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    title text NOT NULL,
    description text NOT NULL DEFAULT '',
    task_type text NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    config jsonb NOT NULL DEFAULT '{}',
    metadata jsonb NOT NULL DEFAULT '{}',
    -- Where the work happens (a checkout, a directory); NULL when it has no place.
    workspace_path text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tasks_title_check CHECK (length(btrim(title)) > 0 AND length(title) <= 255),
    CONSTRAINT tasks_description_check CHECK (length(description) <= 1000000),
    CONSTRAINT tasks_task_type_check CHECK (task_type ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    CONSTRAINT tasks_status_check
        CHECK (status IN ('pending', 'in_progress', 'done', 'cancelled')),
    CONSTRAINT tasks_config_check CHECK (jsonb_typeof(config) = 'object'),
    CONSTRAINT tasks_metadata_check CHECK (jsonb_typeof(metadata) = 'object'),
    -- 512 characters of at most 4 bytes each fit a btree entry (tasks_workspace_created_idx).
    CONSTRAINT tasks_workspace_path_check
        CHECK (length(btrim(workspace_path)) > 0 AND length(workspace_path) <= 512)
);

-- Plain CREATE INDEX, not CONCURRENTLY: the table is new in this transaction.
-- Each listing pages newest first on (created_at, id) within its filter.
CREATE INDEX tasks_created_idx ON tasks (created_at, id);
CREATE INDEX tasks_status_created_idx ON tasks (status, created_at, id);
CREATE INDEX tasks_task_type_created_idx ON tasks (task_type, created_at, id);
CREATE INDEX tasks_workspace_created_idx ON tasks (workspace_path, created_at, id)
    WHERE workspace_path IS NOT NULL;

CREATE TRIGGER tasks_set_updated_at
    BEFORE UPDATE ON tasks
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- The tasks attached to a workflow, in order. A link row: sequence and config change,
-- so it carries updated_at too.
CREATE TABLE workflow_tasks (
    workflow_id uuid NOT NULL,
    task_id uuid NOT NULL,
    -- squawk-ignore prefer-bigint-over-int -- bounded: tasks of one workflow
    sequence integer NOT NULL,
    config jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- Also the index of workflow_tasks_workflow_id_fkey (leading column).
    CONSTRAINT workflow_tasks_pkey PRIMARY KEY (workflow_id, task_id),
    CONSTRAINT workflow_tasks_workflow_id_fkey FOREIGN KEY (workflow_id)
        REFERENCES workflows (id) ON DELETE CASCADE,
    CONSTRAINT workflow_tasks_task_id_fkey FOREIGN KEY (task_id)
        REFERENCES tasks (id) ON DELETE CASCADE,
    CONSTRAINT workflow_tasks_sequence_check CHECK (sequence >= 0),
    CONSTRAINT workflow_tasks_config_check CHECK (jsonb_typeof(config) = 'object'),
    -- Deferrable so that a reorder can renumber every task in one UPDATE.
    CONSTRAINT workflow_tasks_workflow_id_sequence_key UNIQUE (workflow_id, sequence)
        DEFERRABLE INITIALLY IMMEDIATE
);

-- Plain CREATE INDEX, not CONCURRENTLY: the table is new in this transaction.
-- The index of workflow_tasks_task_id_fkey: deleting a task finds its links.
CREATE INDEX workflow_tasks_task_id_idx ON workflow_tasks (task_id);

CREATE TRIGGER workflow_tasks_set_updated_at
    BEFORE UPDATE ON workflow_tasks
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
