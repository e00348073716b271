-- Undo 0012: stages run unordered on live stages again; runs lose their pinned stages,
-- failure modes and child links. A step waiting for a child execution is cancelled.
-- squawk-ignore-file ban-drop-table, ban-drop-column, ban-drop-function, ban-drop-constraint, constraint-missing-not-valid, adding-not-nullable-field -- undoing 0012 restores what it changed, as 0007 and 0004 had it

UPDATE execution_steps
   SET status = 'cancelled', completed_at = now(), error = 'cancelled by a schema rollback'
 WHERE status = 'waiting';

CREATE OR REPLACE FUNCTION check_execution_transition() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    -- Parenthesised: PL/pgSQL ends an IF condition at the first bare THEN.
    IF (CASE OLD.status
            WHEN 'pending' THEN NEW.status IN ('running', 'cancelled', 'failed')
            WHEN 'running' THEN NEW.status IN ('paused', 'completed', 'failed', 'cancelled')
            WHEN 'paused' THEN NEW.status IN ('running', 'cancelled', 'failed')
            ELSE false
        END) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'illegal workflow_executions status transition: % -> %',
                    OLD.status, NEW.status
        USING ERRCODE = 'check_violation',
              CONSTRAINT = TG_NAME,
              SCHEMA = TG_TABLE_SCHEMA,
              TABLE = TG_TABLE_NAME,
              COLUMN = 'status';
END;
$$;

CREATE OR REPLACE FUNCTION check_step_transition() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    -- Parenthesised: PL/pgSQL ends an IF condition at the first bare THEN.
    IF (CASE OLD.status
            WHEN 'pending' THEN NEW.status IN ('queued', 'skipped', 'cancelled')
            WHEN 'queued' THEN NEW.status IN ('running', 'cancelled', 'skipped')
            WHEN 'running' THEN NEW.status IN ('completed', 'failed', 'queued', 'timed_out',
                                               'cancelled')
            WHEN 'failed' THEN NEW.status = 'queued'
            WHEN 'timed_out' THEN NEW.status = 'queued'
            ELSE false
        END) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'illegal execution_steps status transition: % -> %',
                    OLD.status, NEW.status
        USING ERRCODE = 'check_violation',
              CONSTRAINT = TG_NAME,
              SCHEMA = TG_TABLE_SCHEMA,
              TABLE = TG_TABLE_NAME,
              COLUMN = 'status';
END;
$$;

ALTER TABLE execution_steps DROP CONSTRAINT execution_steps_status_check;
ALTER TABLE execution_steps ADD CONSTRAINT execution_steps_status_check CHECK (
    status IN ('pending', 'queued', 'running', 'completed', 'failed', 'skipped',
               'cancelled', 'timed_out')
);
ALTER TABLE execution_steps DROP COLUMN deps_remaining;
ALTER TABLE execution_steps DROP COLUMN version_stage_id;
ALTER TABLE workflow_executions DROP COLUMN parent_step_id;
ALTER TABLE workflow_executions DROP COLUMN failure_mode;

DROP TRIGGER workflow_stages_snapshot ON workflow_stages;
DROP FUNCTION snapshot_stages_on_change();

CREATE OR REPLACE FUNCTION bump_workflow_version() RETURNS trigger
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

DROP FUNCTION snapshot_workflow_stages(uuid);
DROP FUNCTION copy_stage_snapshot(uuid, integer);
DROP FUNCTION check_workflow_stages(uuid);
DROP FUNCTION workflow_stage_graph(uuid);
DROP TABLE workflow_version_stages;

ALTER TABLE workflows DROP COLUMN failure_mode;

UPDATE workflow_stages SET depends_on = '{}' WHERE depends_on IS NULL;
ALTER TABLE workflow_stages ALTER COLUMN depends_on SET DEFAULT '{}';
ALTER TABLE workflow_stages ALTER COLUMN depends_on SET NOT NULL;
