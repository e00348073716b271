-- Undo 0024: no cap on running executions. Executions still pending stay pending.
-- squawk-ignore-file ban-drop-table, ban-drop-column, ban-drop-function -- undoing 0024 drops what it created

DROP TRIGGER workflows_run_slots_on_update ON workflows;
DROP TRIGGER workflow_executions_run_slots_on_delete ON workflow_executions;
DROP TRIGGER workflow_executions_run_slots_settle ON workflow_executions;
DROP TRIGGER workflow_executions_run_slots_on_update ON workflow_executions;
DROP TRIGGER workflow_executions_run_slots_on_insert ON workflow_executions;
DROP TRIGGER workflows_run_slots_on_insert ON workflows;
DROP FUNCTION limit_run_slots();
DROP FUNCTION settle_noted_run_slots();
DROP FUNCTION note_run_slots();
DROP FUNCTION count_run_slots();
DROP FUNCTION settle_run_slots(uuid, integer, boolean);
DROP FUNCTION start_pending_executions(uuid);
DROP FUNCTION create_run_slots();
DROP TABLE workflow_run_slots;
ALTER TABLE workflows DROP COLUMN max_running_executions;

-- Legal status changes of an execution, as 0012 wrote them.
CREATE OR REPLACE FUNCTION check_execution_transition() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    -- Parenthesised: PL/pgSQL ends an IF condition at the first bare THEN.
    IF (CASE OLD.status
            WHEN 'pending' THEN NEW.status IN ('running', 'cancelled', 'failed')
            WHEN 'running' THEN NEW.status IN ('paused', 'completed', 'failed', 'cancelled')
            WHEN 'paused' THEN NEW.status IN ('running', 'cancelled', 'failed')
            WHEN 'failed' THEN NEW.status = 'running' AND NEW.attempt = OLD.attempt + 1
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
