-- Catalog, part two: actions, some of them implemented by a workflow.
-- depends: 0004_create_workflows

CREATE TABLE actions (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    pack_id uuid NOT NULL,
    -- "<pack ref>.<action>"; the pack part is not checked against pack_id.
    ref text NOT NULL,
    entrypoint text NOT NULL,
    description text NOT NULL DEFAULT '',
    param_schema jsonb NOT NULL DEFAULT '{}',
    out_schema jsonb NOT NULL DEFAULT '{}',
    is_workflow boolean NOT NULL DEFAULT false,
    workflow_id uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT actions_pack_id_fkey FOREIGN KEY (pack_id)
        REFERENCES packs (id) ON DELETE CASCADE,
    -- RESTRICT, not SET NULL: nulling workflow_id would break
    -- actions_workflow_link_check. A workflow that implements an action is
    -- deleted only after the action is removed (or relinked).
    CONSTRAINT actions_workflow_id_fkey FOREIGN KEY (workflow_id)
        REFERENCES workflows (id) ON DELETE RESTRICT,
    CONSTRAINT actions_ref_check CHECK (ref ~ '^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$'),
    CONSTRAINT actions_entrypoint_check CHECK (length(btrim(entrypoint)) > 0),
    CONSTRAINT actions_param_schema_check CHECK (jsonb_typeof(param_schema) = 'object'),
    CONSTRAINT actions_out_schema_check CHECK (jsonb_typeof(out_schema) = 'object'),
    CONSTRAINT actions_workflow_link_check CHECK (is_workflow = (workflow_id IS NOT NULL)),
    CONSTRAINT actions_ref_key UNIQUE (ref)
);

-- Plain CREATE INDEX, not CONCURRENTLY: the table is new in this transaction.
CREATE INDEX actions_pack_id_idx ON actions (pack_id);
CREATE INDEX actions_workflow_id_idx ON actions (workflow_id);

CREATE TRIGGER actions_set_updated_at
    BEFORE UPDATE ON actions
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
