-- Undo 0025: the transition and write-once rules back in their functions, fired on every
-- change; updated_at bumped by a call on every update; the attempts' execution key again.

CREATE OR REPLACE TRIGGER execution_steps_set_updated_at
    BEFORE UPDATE ON execution_steps
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE OR REPLACE TRIGGER workflow_executions_set_updated_at
    BEFORE UPDATE ON workflow_executions
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE OR REPLACE FUNCTION check_step_transition() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    -- Parenthesised: PL/pgSQL ends an IF condition at the first bare THEN.
    IF (CASE OLD.status
            WHEN 'pending' THEN NEW.status IN ('queued', 'skipped', 'cancelled')
            WHEN 'queued' THEN NEW.status IN ('running', 'cancelled', 'skipped')
            WHEN 'running' THEN NEW.status IN ('completed', 'failed', 'queued', 'timed_out',
                                               'cancelled', 'waiting')
            WHEN 'waiting' THEN NEW.status IN ('completed', 'failed', 'cancelled', 'queued')
            WHEN 'failed' THEN NEW.status IN ('queued', 'pending')
            WHEN 'timed_out' THEN NEW.status IN ('queued', 'pending')
            WHEN 'skipped' THEN NEW.status IN ('queued', 'pending')
            WHEN 'cancelled' THEN NEW.status IN ('queued', 'pending')
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

CREATE OR REPLACE TRIGGER execution_steps_status_transition
    BEFORE UPDATE OF status ON execution_steps
    FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION check_step_transition();

CREATE OR REPLACE FUNCTION check_execution_transition() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    -- Parenthesised: PL/pgSQL ends an IF condition at the first bare THEN.
    IF (CASE OLD.status
            WHEN 'pending' THEN NEW.status IN ('running', 'cancelled', 'failed')
            WHEN 'running' THEN NEW.status IN ('paused', 'completed', 'failed', 'cancelled')
            WHEN 'paused' THEN NEW.status IN ('running', 'cancelled', 'failed')
            WHEN 'failed' THEN NEW.status IN ('running', 'pending')
                               AND NEW.attempt = OLD.attempt + 1
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

CREATE OR REPLACE TRIGGER workflow_executions_status_transition
    BEFORE UPDATE OF status ON workflow_executions
    FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION check_execution_transition();

CREATE OR REPLACE FUNCTION check_step_attempt_write_once() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF OLD.finished_at IS NOT NULL THEN
        RAISE EXCEPTION 'step_attempts row is write-once: attempt % of step % is already finished',
                        OLD.attempt, OLD.step_id
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = TG_NAME,
                  SCHEMA = TG_TABLE_SCHEMA,
                  TABLE = TG_TABLE_NAME;
    END IF;
    IF (NEW.id, NEW.step_id, NEW.execution_id, NEW.attempt, NEW.worker_id, NEW.started_at)
       IS DISTINCT FROM
       (OLD.id, OLD.step_id, OLD.execution_id, OLD.attempt, OLD.worker_id, OLD.started_at)
    THEN
        RAISE EXCEPTION 'step_attempts row is write-once: an open attempt can only be finished'
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = TG_NAME,
                  SCHEMA = TG_TABLE_SCHEMA,
                  TABLE = TG_TABLE_NAME;
    END IF;
    RETURN NEW;
END;
$$;

CREATE OR REPLACE TRIGGER step_attempts_write_once
    BEFORE UPDATE ON step_attempts
    FOR EACH ROW
    WHEN (NEW IS DISTINCT FROM OLD)
    EXECUTE FUNCTION check_step_attempt_write_once();

-- NOT VALID, then VALIDATE: the check of the existing rows takes a lock claims pass.
ALTER TABLE step_attempts ADD CONSTRAINT step_attempts_execution_id_fkey
    FOREIGN KEY (execution_id) REFERENCES workflow_executions (id) ON DELETE CASCADE
    NOT VALID;
ALTER TABLE step_attempts VALIDATE CONSTRAINT step_attempts_execution_id_fkey;
