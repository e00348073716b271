-- Named queues: every step runs in the queue of its stage ('default' unless the stage names
-- one), copied into the stage snapshot and onto the step at start; claims can ask for some
-- queues only, and a paused queue's steps are never claimed. Durable timers and signals: a
-- step can wait for a signal sent to its execution (execution_signals), with a deadline.
-- depends: 0019_create_workflow_schedules
-- squawk-ignore-file ban-drop-function -- workflow_stage_graph gains a column; a function's
-- result type cannot change in place, and nothing stores a reference to it

-- The CHECKs are added NOT VALID (new rows are checked at once; existing ones all hold the
-- default) and validated by 0021 outside this transaction, under a lock that lets claims
-- and completions go on.
ALTER TABLE workflow_stages ADD COLUMN queue text NOT NULL DEFAULT 'default';
ALTER TABLE workflow_stages ADD CONSTRAINT workflow_stages_queue_check
    CHECK (queue ~ '^[a-z][a-z0-9_-]{0,62}$') NOT VALID;
ALTER TABLE workflow_version_stages ADD COLUMN queue text NOT NULL DEFAULT 'default';
ALTER TABLE execution_steps ADD COLUMN queue text NOT NULL DEFAULT 'default';
ALTER TABLE execution_steps ADD CONSTRAINT execution_steps_queue_check
    CHECK (queue ~ '^[a-z][a-z0-9_-]{0,62}$') NOT VALID;
-- Durable timers and signals: what a waiting step waits for, until when, and what woke it.
ALTER TABLE execution_steps ADD COLUMN signal_name text;
ALTER TABLE execution_steps ADD COLUMN signal_deadline timestamptz;
ALTER TABLE execution_steps ADD COLUMN signal_id uuid;

-- Queues paused or resumed at least once. A queue with no row here is running; claims skip
-- the queues whose row says paused.
CREATE TABLE queue_states (
    name text PRIMARY KEY,
    paused boolean NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT queue_states_name_check CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$')
);

CREATE TRIGGER queue_states_set_updated_at
    BEFORE UPDATE ON queue_states
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Plain CREATE INDEX, not CONCURRENTLY, below: the table is new in this transaction.
-- Signals sent to executions: each is consumed by exactly one step waiting for its name
-- (at once when one waits, else by the next step that waits for it, oldest first). A
-- signal nothing waits for is kept: signals queue, they do not replace each other.
CREATE TABLE execution_signals (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    execution_id uuid NOT NULL,
    name text NOT NULL,
    payload jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- The step it woke, and when; both NULL while nothing consumed it.
    consumed_by uuid,
    consumed_at timestamptz,
    CONSTRAINT execution_signals_execution_id_fkey FOREIGN KEY (execution_id)
        REFERENCES workflow_executions (id) ON DELETE CASCADE,
    CONSTRAINT execution_signals_consumed_by_fkey FOREIGN KEY (consumed_by)
        REFERENCES execution_steps (id) ON DELETE CASCADE,
    CONSTRAINT execution_signals_name_check CHECK (name ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    CONSTRAINT execution_signals_consumed_check
        CHECK ((consumed_by IS NULL) = (consumed_at IS NULL))
);

-- The signals an execution holds unconsumed, by name, oldest first (what a wait reads).
CREATE INDEX execution_signals_pending_idx ON execution_signals (execution_id, name, id)
    WHERE consumed_at IS NULL;
-- The index of execution_signals_execution_id_fkey.
CREATE INDEX execution_signals_execution_idx ON execution_signals (execution_id);
-- The index of execution_signals_consumed_by_fkey.
CREATE INDEX execution_signals_consumed_by_idx ON execution_signals (consumed_by)
    WHERE consumed_by IS NOT NULL;

-- Legal status changes of a step. running -> queued is a retry, a lost lease being
-- requeued or a sleep; running -> waiting starts a child execution or waits for a signal,
-- and waiting -> queued is that signal (or its timeout) arriving; a pending step is
-- skipped when something it depends on failed. completed is final; failed, timed_out,
-- skipped and cancelled go back to pending or queued only when their execution is retried.
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

DROP FUNCTION workflow_stage_graph(uuid);

-- The live stages of a workflow with their dependencies resolved: a NULL depends_on
-- becomes the previous stage by position (none for the first); with every direct and
-- transitive dependent. The walk is a UNION over a finite set of pairs, so it ends on a
-- cycle too (check_workflow_stages refuses those).
CREATE FUNCTION workflow_stage_graph(wid uuid)
    RETURNS TABLE (stage_id uuid, "position" integer, name text, action_ref text,
                   depends_on text[], dependents text[], downstream text[], config jsonb,
                   with_items jsonb, retry_policy jsonb, timeout_seconds integer,
                   queue text)
    LANGUAGE sql STABLE
AS $$
    WITH RECURSIVE live AS (
        SELECT s.id, s.position, s.name, s.action_ref, s.config, s.with_items,
               s.retry_policy, s.timeout_seconds, s.queue,
               coalesce(s.depends_on,
                        CASE WHEN lag(s.name) OVER w IS NULL THEN '{}'::text[]
                             ELSE ARRAY[lag(s.name) OVER w] END) AS deps
          FROM workflow_stages AS s
         WHERE s.workflow_id = wid
        WINDOW w AS (ORDER BY s.position)
    ), edges AS (
        SELECT l.name, d.dep FROM live AS l CROSS JOIN LATERAL unnest(l.deps) AS d (dep)
    ), walk (origin, node) AS (
        SELECT e.name, e.dep FROM edges AS e
        UNION
        SELECT w.origin, e.dep FROM walk AS w JOIN edges AS e ON e.name = w.node
    )
    SELECT l.id, l.position, l.name, l.action_ref, l.deps,
           ARRAY(SELECT e.name FROM edges AS e WHERE e.dep = l.name ORDER BY e.name),
           ARRAY(SELECT w.origin FROM walk AS w WHERE w.node = l.name ORDER BY w.origin),
           l.config, l.with_items, l.retry_policy, l.timeout_seconds, l.queue
      FROM live AS l
     ORDER BY l.position
$$;

-- Freeze the live stages (checked) as the stage snapshot of one workflow version.
CREATE OR REPLACE FUNCTION copy_stage_snapshot(wid uuid, ver integer) RETURNS void
    LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM check_workflow_stages(wid);
    INSERT INTO workflow_version_stages (workflow_id, version, stage_id, position, name,
                                         action_ref, depends_on, dependents, downstream,
                                         config, with_items, retry_policy, timeout_seconds,
                                         queue)
    SELECT wid, ver, g.stage_id, g.position, g.name, g.action_ref, g.depends_on, g.dependents,
           g.downstream, g.config, g.with_items, g.retry_policy, g.timeout_seconds,
           g.queue
      FROM workflow_stage_graph(wid) AS g;
END;
$$;

-- Make the live stages the workflow's current version: unchanged stages keep the version,
-- changed ones make a new version (definition unchanged) with its own snapshot. Locks the
-- workflow row first, so concurrent stage edits of one workflow snapshot one at a time.
-- The current version, or NULL when the workflow is gone.
CREATE OR REPLACE FUNCTION snapshot_workflow_stages(wid uuid) RETURNS integer
    LANGUAGE plpgsql
AS $$
DECLARE
    current_version integer;
BEGIN
    SELECT w.version INTO current_version
      FROM workflows AS w
     WHERE w.id = wid
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM check_workflow_stages(wid);
    IF (SELECT jsonb_agg(jsonb_build_array(g.stage_id, g.name, g.action_ref, g.depends_on,
                                           g.config, g.with_items, g.retry_policy,
                                           g.timeout_seconds, g.queue)
                         ORDER BY g.position)
          FROM workflow_stage_graph(wid) AS g)
       IS DISTINCT FROM
       (SELECT jsonb_agg(jsonb_build_array(v.stage_id, v.name, v.action_ref, v.depends_on,
                                           v.config, v.with_items, v.retry_policy,
                                           v.timeout_seconds, v.queue)
                         ORDER BY v.position)
          FROM workflow_version_stages AS v
         WHERE v.workflow_id = wid AND v.version = current_version) THEN
        -- bump_workflow_version allows this one bump (see there).
        PERFORM set_config('flowledger.restage', wid::text, true);
        UPDATE workflows SET version = version + 1 WHERE id = wid
        RETURNING version INTO current_version;
        PERFORM set_config('flowledger.restage', '', true);
    END IF;
    RETURN current_version;
END;
$$;
