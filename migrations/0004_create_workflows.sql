-- Workflows, their immutable definition versions and their ordered stages.
-- depends: 0003_create_packs

CREATE TABLE workflows (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    -- RESTRICT: a user who owns workflows is deactivated, not deleted.
    owner_id uuid NOT NULL,
    pack_id uuid,
    name text NOT NULL,
    description text NOT NULL DEFAULT '',
    status text NOT NULL DEFAULT 'draft',
    enabled boolean NOT NULL DEFAULT true,
    trigger_type text NOT NULL DEFAULT 'manual',
    -- Cron expression; present exactly when trigger_type = 'schedule'.
    schedule text,
    -- The definition as written (YAML) and decomposed; both are versioned.
    definition_yaml text NOT NULL DEFAULT '',
    definition jsonb NOT NULL DEFAULT '{}',
    param_schema jsonb NOT NULL DEFAULT '{}',
    out_schema jsonb NOT NULL DEFAULT '{}',
    tags text[] NOT NULL DEFAULT '{}',
    -- Explicit regconfigs keep the expression immutable, as a generated
    -- column requires. Names are indexed unstemmed, descriptions stemmed, so
    -- a query ORs both parses: websearch_to_tsquery('simple', q) ||
    -- websearch_to_tsquery('english', q).
    search tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('simple'::regconfig, name), 'A')
        || setweight(to_tsvector('english'::regconfig, coalesce(description, '')), 'B')
    ) STORED,
    -- Definition version, maintained by workflows_version_on_update.
    -- squawk-ignore prefer-bigint-over-int -- bounded: one per definition edit
    version integer NOT NULL DEFAULT 1,
    -- Optimistic-locking counter, bumped by every application update.
    -- squawk-ignore prefer-bigint-over-int -- bounded: one per edit
    row_version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT workflows_owner_id_fkey FOREIGN KEY (owner_id)
        REFERENCES users (id) ON DELETE RESTRICT,
    CONSTRAINT workflows_pack_id_fkey FOREIGN KEY (pack_id)
        REFERENCES packs (id) ON DELETE SET NULL,
    CONSTRAINT workflows_name_check CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    CONSTRAINT workflows_status_check CHECK (status IN ('draft', 'active', 'archived')),
    CONSTRAINT workflows_trigger_type_check
        CHECK (trigger_type IN ('manual', 'schedule', 'event', 'webhook')),
    CONSTRAINT workflows_schedule_check
        CHECK ((trigger_type = 'schedule') = (schedule IS NOT NULL)),
    CONSTRAINT workflows_definition_check CHECK (jsonb_typeof(definition) = 'object'),
    CONSTRAINT workflows_param_schema_check CHECK (jsonb_typeof(param_schema) = 'object'),
    CONSTRAINT workflows_out_schema_check CHECK (jsonb_typeof(out_schema) = 'object'),
    CONSTRAINT workflows_tags_check CHECK (array_position(tags, NULL) IS NULL),
    CONSTRAINT workflows_version_check CHECK (version >= 1),
    CONSTRAINT workflows_row_version_check CHECK (row_version >= 1),
    -- Also the index of workflows_owner_id_fkey (leading column).
    CONSTRAINT workflows_owner_id_name_key UNIQUE (owner_id, name)
);

-- Plain CREATE INDEX, not CONCURRENTLY: the table is new in this transaction.
CREATE INDEX workflows_tags_idx ON workflows USING gin (tags);
CREATE INDEX workflows_search_idx ON workflows USING gin (search);
-- The owner's dashboard: one status, most recently edited first.
CREATE INDEX workflows_owner_status_updated_idx
    ON workflows (owner_id, status, updated_at DESC, id DESC);
-- Keyset pagination over all workflows, by edit or by creation time.
CREATE INDEX workflows_updated_idx ON workflows (updated_at, id);
CREATE INDEX workflows_created_idx ON workflows (created_at, id);
CREATE INDEX workflows_pack_id_idx ON workflows (pack_id);
CREATE INDEX workflows_status_updated_idx ON workflows (status, updated_at, id);

CREATE TRIGGER workflows_set_updated_at
    BEFORE UPDATE ON workflows
    FOR EACH ROW EXECUTE FUNCTION set_updated_at('search');

CREATE TABLE workflow_versions (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    workflow_id uuid NOT NULL,
    -- squawk-ignore prefer-bigint-over-int -- bounded: one per definition edit
    version integer NOT NULL,
    definition_yaml text NOT NULL,
    definition jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT workflow_versions_workflow_id_fkey FOREIGN KEY (workflow_id)
        REFERENCES workflows (id) ON DELETE CASCADE,
    CONSTRAINT workflow_versions_version_check CHECK (version >= 1),
    CONSTRAINT workflow_versions_definition_check CHECK (jsonb_typeof(definition) = 'object'),
    -- Target of workflow_executions_version_fkey; also the index of
    -- workflow_versions_workflow_id_fkey (leading column).
    CONSTRAINT workflow_versions_workflow_id_version_key UNIQUE (workflow_id, version)
);

-- Snapshots are history that executions point at: never rewritten. They go
-- away only with their workflow (DELETE is allowed for the cascade).
CREATE TRIGGER workflow_versions_immutable
    BEFORE UPDATE ON workflow_versions
    FOR EACH ROW EXECUTE FUNCTION reject_update();

-- AFTER INSERT: the snapshot references the workflow row, which a BEFORE
-- INSERT trigger would not see yet.
CREATE FUNCTION record_workflow_version() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO workflow_versions (workflow_id, version, definition_yaml, definition)
    VALUES (NEW.id, NEW.version, NEW.definition_yaml, NEW.definition);
    RETURN NULL;
END;
$$;

CREATE TRIGGER workflows_version_on_insert
    AFTER INSERT ON workflows
    FOR EACH ROW EXECUTE FUNCTION record_workflow_version();

-- version belongs to the database: a definition change bumps it and snapshots
-- the new definition; any other attempt to change it is undone, so that
-- workflows.version always names an existing workflow_versions row. The
-- workflow row already exists on UPDATE, so the snapshot can be written here.
CREATE FUNCTION bump_workflow_version() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.definition IS DISTINCT FROM OLD.definition
       OR NEW.definition_yaml IS DISTINCT FROM OLD.definition_yaml THEN
        NEW.version := OLD.version + 1;
        INSERT INTO workflow_versions (workflow_id, version, definition_yaml, definition)
        VALUES (NEW.id, NEW.version, NEW.definition_yaml, NEW.definition);
    ELSE
        NEW.version := OLD.version;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER workflows_version_on_update
    BEFORE UPDATE ON workflows
    FOR EACH ROW
    WHEN (NEW.definition IS DISTINCT FROM OLD.definition
          OR NEW.definition_yaml IS DISTINCT FROM OLD.definition_yaml
          OR NEW.version IS DISTINCT FROM OLD.version)
    EXECUTE FUNCTION bump_workflow_version();

CREATE TABLE workflow_stages (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    workflow_id uuid NOT NULL,
    -- squawk-ignore prefer-bigint-over-int -- bounded: stages of one workflow
    position integer NOT NULL,
    name text NOT NULL,
    -- Resolved against actions.ref at run time; no FK, so a workflow can be
    -- drafted before its pack is installed.
    action_ref text NOT NULL,
    -- Names of stages of the same workflow that must complete first.
    depends_on text[] NOT NULL DEFAULT '{}',
    config jsonb NOT NULL DEFAULT '{}',
    -- Fan-out items: one execution step per element (task_index).
    with_items jsonb,
    retry_policy jsonb NOT NULL
        DEFAULT '{"max_attempts": 3, "backoff_base_seconds": 1, "backoff_max_seconds": 300}',
    -- squawk-ignore prefer-bigint-over-int -- bounded: seconds, int4 spans 68 years
    timeout_seconds integer NOT NULL DEFAULT 3600,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT workflow_stages_workflow_id_fkey FOREIGN KEY (workflow_id)
        REFERENCES workflows (id) ON DELETE CASCADE,
    CONSTRAINT workflow_stages_position_check CHECK (position >= 0),
    CONSTRAINT workflow_stages_name_check CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    CONSTRAINT workflow_stages_action_ref_check CHECK (length(btrim(action_ref)) > 0),
    CONSTRAINT workflow_stages_depends_on_check
        CHECK (array_position(depends_on, NULL) IS NULL AND NOT name = ANY (depends_on)),
    CONSTRAINT workflow_stages_config_check CHECK (jsonb_typeof(config) = 'object'),
    CONSTRAINT workflow_stages_with_items_check
        CHECK (with_items IS NULL OR jsonb_typeof(with_items) = 'array'),
    -- CASE, not AND: the cast must not run (and fail with a cast error
    -- instead of this constraint) when max_attempts is missing or not a number.
    CONSTRAINT workflow_stages_retry_policy_check CHECK (
        CASE jsonb_typeof(retry_policy -> 'max_attempts')
            WHEN 'number' THEN (retry_policy ->> 'max_attempts')::numeric >= 1
                AND (retry_policy ->> 'max_attempts')::numeric
                    = trunc((retry_policy ->> 'max_attempts')::numeric)
            ELSE false
        END
    ),
    CONSTRAINT workflow_stages_timeout_seconds_check CHECK (timeout_seconds > 0),
    -- Deferrable so that a reorder can swap positions in one transaction
    -- (SET CONSTRAINTS ... DEFERRED) or renumber in a single UPDATE. Also the
    -- index of workflow_stages_workflow_id_fkey (leading column).
    CONSTRAINT workflow_stages_workflow_id_position_key UNIQUE (workflow_id, position)
        DEFERRABLE INITIALLY IMMEDIATE,
    CONSTRAINT workflow_stages_workflow_id_name_key UNIQUE (workflow_id, name)
);

CREATE TRIGGER workflow_stages_set_updated_at
    BEFORE UPDATE ON workflow_stages
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
