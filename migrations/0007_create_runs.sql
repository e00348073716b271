-- Runs: executions, their steps, attempts, logs and tool calls.
-- depends: 0006_create_agents

CREATE TABLE workflow_executions (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    workflow_id uuid NOT NULL,
    -- The exact definition this execution runs (workflow_versions.version).
    -- squawk-ignore prefer-bigint-over-int -- bounded: mirrors workflow_versions.version
    workflow_version integer NOT NULL,
    -- Set for sub-workflow executions; they go away with their parent.
    parent_execution_id uuid,
    triggered_by uuid,
    status text NOT NULL DEFAULT 'pending',
    -- squawk-ignore prefer-bigint-over-int -- bounded: reruns of one execution
    attempt integer NOT NULL DEFAULT 1,
    -- Caller-chosen key making "start this run" safe to retry; NULL opts out
    -- (NULLs are distinct in workflow_executions_idempotency_key).
    idempotency_key text,
    parameters jsonb NOT NULL DEFAULT '{}',
    variables jsonb NOT NULL DEFAULT '{}',
    task_graph jsonb NOT NULL DEFAULT '{}',
    error_message text,
    pause_reason text,
    started_at timestamptz,
    finished_at timestamptz,
    -- squawk-ignore prefer-bigint-over-int -- bounded: one per edit
    row_version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT workflow_executions_workflow_id_fkey FOREIGN KEY (workflow_id)
        REFERENCES workflows (id) ON DELETE CASCADE,
    -- NO ACTION (checked at the end of the statement): versions are deleted
    -- only by the cascade from workflows, which removes the executions too.
    CONSTRAINT workflow_executions_version_fkey FOREIGN KEY (workflow_id, workflow_version)
        REFERENCES workflow_versions (workflow_id, version),
    CONSTRAINT workflow_executions_parent_execution_id_fkey FOREIGN KEY (parent_execution_id)
        REFERENCES workflow_executions (id) ON DELETE CASCADE,
    CONSTRAINT workflow_executions_triggered_by_fkey FOREIGN KEY (triggered_by)
        REFERENCES users (id) ON DELETE SET NULL,
    CONSTRAINT workflow_executions_status_check CHECK (
        status IN ('pending', 'running', 'paused', 'completed', 'failed', 'cancelled')
    ),
    CONSTRAINT workflow_executions_attempt_check CHECK (attempt >= 1),
    CONSTRAINT workflow_executions_parent_check CHECK (parent_execution_id <> id),
    CONSTRAINT workflow_executions_idempotency_key_check
        CHECK (length(btrim(idempotency_key)) > 0),
    CONSTRAINT workflow_executions_parameters_check CHECK (jsonb_typeof(parameters) = 'object'),
    CONSTRAINT workflow_executions_variables_check CHECK (jsonb_typeof(variables) = 'object'),
    CONSTRAINT workflow_executions_task_graph_check CHECK (jsonb_typeof(task_graph) = 'object'),
    CONSTRAINT workflow_executions_pause_reason_check
        CHECK (pause_reason IS NULL OR status = 'paused'),
    -- A cancelled execution may or may not have started.
    CONSTRAINT workflow_executions_started_check CHECK (
        started_at IS NOT NULL OR status NOT IN ('running', 'paused', 'completed', 'failed')
    ),
    CONSTRAINT workflow_executions_finished_check CHECK (
        (finished_at IS NOT NULL) = (status IN ('completed', 'failed', 'cancelled'))
    ),
    CONSTRAINT workflow_executions_timing_check CHECK (finished_at >= started_at),
    CONSTRAINT workflow_executions_row_version_check CHECK (row_version >= 1),
    CONSTRAINT workflow_executions_idempotency_key UNIQUE (workflow_id, idempotency_key)
);

-- Plain CREATE INDEX, not CONCURRENTLY: the table is new in this transaction.
CREATE INDEX workflow_executions_status_updated_idx
    ON workflow_executions (status, updated_at);
-- Also the index of workflow_executions_workflow_id_fkey (leading column).
CREATE INDEX workflow_executions_workflow_status_idx
    ON workflow_executions (workflow_id, status);
-- The index of workflow_executions_version_fkey: runs of one version.
CREATE INDEX workflow_executions_workflow_version_idx
    ON workflow_executions (workflow_id, workflow_version);
CREATE INDEX workflow_executions_workflow_created_idx
    ON workflow_executions (workflow_id, created_at, id);
CREATE INDEX workflow_executions_created_idx ON workflow_executions (created_at, id);
-- Most executions have no parent; the FK lookup (parent_execution_id = $1)
-- implies IS NOT NULL, so the partial index serves it.
CREATE INDEX workflow_executions_parent_idx ON workflow_executions (parent_execution_id)
    WHERE parent_execution_id IS NOT NULL;
CREATE INDEX workflow_executions_triggered_by_idx ON workflow_executions (triggered_by);
CREATE INDEX workflow_executions_paused_idx ON workflow_executions (updated_at)
    WHERE status = 'paused';
-- Retention: finished executions oldest first.
CREATE INDEX workflow_executions_finished_idx ON workflow_executions (finished_at)
    WHERE finished_at IS NOT NULL;

CREATE TRIGGER workflow_executions_set_updated_at
    BEFORE UPDATE ON workflow_executions
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Legal status changes of an execution; anything else is refused like a CHECK.
-- Terminal states (completed, failed, cancelled) never change.
CREATE FUNCTION check_execution_transition() RETURNS trigger
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

CREATE TRIGGER workflow_executions_status_transition
    BEFORE UPDATE OF status ON workflow_executions
    FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION check_execution_transition();

-- The hot, narrow row of one task in one execution: claimed, leased,
-- heartbeaten and retried in place. History goes to step_attempts/step_logs.
CREATE TABLE execution_steps (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    execution_id uuid NOT NULL,
    stage_id uuid,
    task_name text NOT NULL,
    -- Position in a with_items fan-out; 0 for a plain task.
    -- squawk-ignore prefer-bigint-over-int -- bounded: width of one fan-out
    task_index integer NOT NULL DEFAULT 0,
    status text NOT NULL DEFAULT 'pending',
    -- Lower runs first (claim order: priority, available_at, id).
    -- squawk-ignore prefer-bigint-over-smallint -- bounded: CHECKed to -1000..1000, narrow on a hot row
    priority smallint NOT NULL DEFAULT 0,
    -- Attempts started so far.
    -- squawk-ignore prefer-bigint-over-int -- bounded: CHECKed to at most max_attempts
    attempt integer NOT NULL DEFAULT 0,
    -- squawk-ignore prefer-bigint-over-int -- bounded: a retry budget
    max_attempts integer NOT NULL DEFAULT 3,
    -- Earliest claim time: now() when queued, the backoff deadline on retry.
    available_at timestamptz NOT NULL DEFAULT now(),
    -- squawk-ignore prefer-bigint-over-int -- bounded: seconds, int4 spans 68 years
    timeout_seconds integer NOT NULL DEFAULT 3600,
    lease_owner text,
    lease_expires_at timestamptz,
    heartbeat_at timestamptz,
    started_at timestamptz,
    completed_at timestamptz,
    duration_ms bigint,
    outputs jsonb,
    error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT execution_steps_execution_id_fkey FOREIGN KEY (execution_id)
        REFERENCES workflow_executions (id) ON DELETE CASCADE,
    CONSTRAINT execution_steps_stage_id_fkey FOREIGN KEY (stage_id)
        REFERENCES workflow_stages (id) ON DELETE SET NULL,
    CONSTRAINT execution_steps_task_name_check CHECK (length(btrim(task_name)) > 0),
    CONSTRAINT execution_steps_task_index_check CHECK (task_index >= 0),
    CONSTRAINT execution_steps_status_check CHECK (
        status IN ('pending', 'queued', 'running', 'completed', 'failed', 'skipped',
                   'cancelled', 'timed_out')
    ),
    CONSTRAINT execution_steps_priority_check CHECK (priority BETWEEN -1000 AND 1000),
    CONSTRAINT execution_steps_attempt_check CHECK (attempt >= 0),
    CONSTRAINT execution_steps_max_attempts_check CHECK (max_attempts >= 1),
    CONSTRAINT execution_steps_attempt_limit_check CHECK (attempt <= max_attempts),
    CONSTRAINT execution_steps_timeout_seconds_check CHECK (timeout_seconds > 0),
    -- A running step is always leased, and only a running step is.
    CONSTRAINT execution_steps_lease_check CHECK (
        (status = 'running') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)
    ),
    CONSTRAINT execution_steps_duration_ms_check CHECK (duration_ms >= 0),
    -- Also the index of execution_steps_execution_id_fkey (leading column).
    CONSTRAINT execution_steps_execution_task_key UNIQUE (execution_id, task_name, task_index)
);

-- Plain CREATE INDEX, not CONCURRENTLY: the table is new in this transaction.
-- The claim query polls exactly this: queued steps in claim order.
CREATE INDEX execution_steps_claim_idx ON execution_steps (priority, available_at, id)
    WHERE status = 'queued';
-- The reaper: running steps whose lease has expired.
CREATE INDEX execution_steps_lease_expiry_idx ON execution_steps (lease_expires_at)
    WHERE status = 'running';
-- Steps waiting out a retry backoff.
CREATE INDEX execution_steps_retry_idx ON execution_steps (available_at)
    WHERE status = 'queued' AND attempt > 0;
CREATE INDEX execution_steps_stage_id_idx ON execution_steps (stage_id);
-- Timeouts: running steps by start time (started_at + timeout_seconds).
CREATE INDEX execution_steps_running_started_idx ON execution_steps (started_at)
    WHERE status = 'running';

CREATE TRIGGER execution_steps_set_updated_at
    BEFORE UPDATE ON execution_steps
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Legal status changes of a step. running -> queued is a retry or a lost
-- lease being requeued; failed/timed_out -> queued is a manual or automatic
-- retry. completed, skipped and cancelled are terminal.
CREATE FUNCTION check_step_transition() RETURNS trigger
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

CREATE TRIGGER execution_steps_status_transition
    BEFORE UPDATE OF status ON execution_steps
    FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION check_step_transition();

-- One row per attempt, written when the attempt starts and finished once.
-- execution_id is denormalised so an execution's history reads without a join.
CREATE TABLE step_attempts (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    step_id uuid NOT NULL,
    execution_id uuid NOT NULL,
    -- squawk-ignore prefer-bigint-over-int -- bounded: attempts of one step
    attempt integer NOT NULL,
    worker_id text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    outcome text,
    error text,
    CONSTRAINT step_attempts_step_id_fkey FOREIGN KEY (step_id)
        REFERENCES execution_steps (id) ON DELETE CASCADE,
    CONSTRAINT step_attempts_execution_id_fkey FOREIGN KEY (execution_id)
        REFERENCES workflow_executions (id) ON DELETE CASCADE,
    CONSTRAINT step_attempts_attempt_check CHECK (attempt >= 1),
    CONSTRAINT step_attempts_worker_id_check CHECK (length(btrim(worker_id)) > 0),
    CONSTRAINT step_attempts_outcome_check CHECK (
        outcome IN ('completed', 'failed', 'timed_out', 'lease_lost', 'cancelled')
    ),
    CONSTRAINT step_attempts_finished_check CHECK ((outcome IS NULL) = (finished_at IS NULL)),
    CONSTRAINT step_attempts_timing_check CHECK (finished_at >= started_at),
    -- Also the index of step_attempts_step_id_fkey (leading column).
    CONSTRAINT step_attempts_step_id_attempt_key UNIQUE (step_id, attempt)
);

-- Plain CREATE INDEX, not CONCURRENTLY: the table is new in this transaction.
CREATE INDEX step_attempts_execution_id_idx ON step_attempts (execution_id);

-- An open attempt may only be finished (finished_at, outcome, error); a
-- finished one never changes again.
CREATE FUNCTION check_step_attempt_write_once() RETURNS trigger
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

CREATE TRIGGER step_attempts_write_once
    BEFORE UPDATE ON step_attempts
    FOR EACH ROW
    WHEN (NEW IS DISTINCT FROM OLD)
    EXECUTE FUNCTION check_step_attempt_write_once();

-- Append-only log lines, bulk-written with COPY. A plain table (no
-- partitions, so it runs the same on every supported server): retention
-- deletes old lines in batches, found through the BRIN index, which stays
-- tiny because lines arrive in logged_at order. The bigint identity keeps
-- rows narrow and lets COPY omit the key.
CREATE TABLE step_logs (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    step_id uuid NOT NULL,
    execution_id uuid NOT NULL,
    level text NOT NULL DEFAULT 'info',
    message text NOT NULL,
    fields jsonb NOT NULL DEFAULT '{}',
    logged_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT step_logs_step_id_fkey FOREIGN KEY (step_id)
        REFERENCES execution_steps (id) ON DELETE CASCADE,
    CONSTRAINT step_logs_execution_id_fkey FOREIGN KEY (execution_id)
        REFERENCES workflow_executions (id) ON DELETE CASCADE,
    CONSTRAINT step_logs_level_check CHECK (level IN ('debug', 'info', 'warning', 'error')),
    CONSTRAINT step_logs_fields_check CHECK (jsonb_typeof(fields) = 'object')
);

-- Plain CREATE INDEX, not CONCURRENTLY: the table is new in this transaction.
-- Also the index of step_logs_step_id_fkey (leading column).
CREATE INDEX step_logs_step_idx ON step_logs (step_id, logged_at, id);
-- Also the index of step_logs_execution_id_fkey (leading column).
CREATE INDEX step_logs_execution_idx ON step_logs (execution_id, logged_at, id);
CREATE INDEX step_logs_logged_at_idx ON step_logs USING brin (logged_at);

-- Tool calls made by a step or by an agent session; per-tool statistics
-- (count, failure rate, latency percentiles) read tool_name + status + time.
CREATE TABLE tool_executions (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    step_id uuid,
    session_id uuid,
    tool_name text NOT NULL,
    input jsonb NOT NULL DEFAULT '{}',
    output jsonb,
    status text NOT NULL DEFAULT 'running',
    error text,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    duration_ms bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tool_executions_step_id_fkey FOREIGN KEY (step_id)
        REFERENCES execution_steps (id) ON DELETE CASCADE,
    CONSTRAINT tool_executions_session_id_fkey FOREIGN KEY (session_id)
        REFERENCES sessions (id) ON DELETE CASCADE,
    CONSTRAINT tool_executions_tool_name_check CHECK (length(btrim(tool_name)) > 0),
    CONSTRAINT tool_executions_input_check CHECK (jsonb_typeof(input) = 'object'),
    CONSTRAINT tool_executions_status_check
        CHECK (status IN ('running', 'succeeded', 'failed')),
    CONSTRAINT tool_executions_finished_check
        CHECK ((finished_at IS NOT NULL) = (status <> 'running')),
    CONSTRAINT tool_executions_timing_check CHECK (finished_at >= started_at),
    CONSTRAINT tool_executions_duration_ms_check CHECK (duration_ms >= 0)
);

-- Plain CREATE INDEX, not CONCURRENTLY: the table is new in this transaction.
CREATE INDEX tool_executions_step_id_idx ON tool_executions (step_id);
CREATE INDEX tool_executions_session_id_idx ON tool_executions (session_id);
CREATE INDEX tool_executions_tool_status_created_idx
    ON tool_executions (tool_name, status, created_at);
CREATE INDEX tool_executions_created_idx ON tool_executions (created_at);

CREATE TRIGGER tool_executions_set_updated_at
    BEFORE UPDATE ON tool_executions
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
