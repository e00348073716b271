-- A workflow can cap how many of its executions run at once: max_running_executions (NULL:
-- no cap). An execution started while the cap is reached is created 'pending' and starts,
-- oldest (lowest id) first, when a slot frees. Running and paused executions hold a slot.
-- depends: 0023_validate_flow_limit_checks

-- squawk-ignore prefer-bigint-over-int -- bounded: a count of executions
ALTER TABLE workflows ADD COLUMN max_running_executions integer
    CONSTRAINT workflows_max_running_executions_check CHECK (max_running_executions > 0);

-- One row per workflow: how many of its executions hold a slot (running or paused) while
-- it has a cap, NULL while it has none. The row every start, retry and slot release of a
-- capped workflow locks: a statement that waited for that lock reads its newest version,
-- so the count it admits against is exact under READ COMMITTED, and the releaser that
-- held the lock before has started every pending execution it could see.
CREATE TABLE workflow_run_slots (
    workflow_id uuid PRIMARY KEY,
    -- squawk-ignore prefer-bigint-over-int -- bounded: a count of executions
    running integer,
    CONSTRAINT workflow_run_slots_workflow_id_fkey FOREIGN KEY (workflow_id)
        REFERENCES workflows (id) ON DELETE CASCADE,
    CONSTRAINT workflow_run_slots_running_check CHECK (running >= 0)
);

INSERT INTO workflow_run_slots (workflow_id, running)
SELECT id, NULL FROM workflows;

-- A new workflow gets its slot row (counting from 0 when it has a cap).
CREATE FUNCTION create_run_slots() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO workflow_run_slots (workflow_id, running)
    VALUES (NEW.id, CASE WHEN NEW.max_running_executions IS NULL THEN NULL ELSE 0 END);
    RETURN NULL;
END;
$$;

CREATE TRIGGER workflows_run_slots_on_insert
    AFTER INSERT ON workflows
    FOR EACH ROW EXECUTE FUNCTION create_run_slots();

-- Start the oldest pending executions of a workflow (id order: ids are uuid v7), as many as
-- it has free slots, all of them when it has no cap: running, started_at set (kept by a
-- retried one; clock_timestamp(), not now(): the slot row's lock orders these
-- statements, not their transactions' starts, so started_at follows the order executions
-- start in), `execution.started` in the outbox and the workers woken when steps are
-- queued. The caller holds the workflow's slot row, so this statement (a snapshot of its
-- own) sees every pending execution committed by the starters that held it before. A
-- pending execution always has steps to run: one with none completes at start and never
-- waits. The slot count itself goes up in note_run_slots, fired by the UPDATE.
CREATE FUNCTION start_pending_executions(wid uuid) RETURNS void
    LANGUAGE plpgsql
AS $$
DECLARE
    slots_free integer;
    hints integer;
BEGIN
    -- greatest() ignores a NULL: no cap must stay NULL (no limit), not become 0.
    SELECT CASE WHEN w.max_running_executions IS NOT NULL
                THEN greatest(w.max_running_executions - s.running, 0) END
      INTO slots_free
      FROM workflows AS w
      JOIN workflow_run_slots AS s ON s.workflow_id = w.id
     WHERE w.id = wid;
    IF NOT FOUND OR slots_free = 0 THEN
        RETURN;
    END IF;
    -- LIMIT NULL is no limit. The lock sits below the LIMIT: an execution cancelled
    -- meanwhile drops out and the next pending one takes its place.
    WITH picked AS (
        SELECT x.id
          FROM workflow_executions AS x
         WHERE x.workflow_id = wid AND x.status = 'pending'
         ORDER BY x.id
         LIMIT slots_free
           FOR NO KEY UPDATE
    ), started AS (
        UPDATE workflow_executions AS x
           SET status = 'running', started_at = coalesce(x.started_at, clock_timestamp()),
               row_version = x.row_version + 1
          FROM picked AS p
         WHERE x.id = p.id
        RETURNING x.id, x.workflow_id, x.workflow_version
    ), events AS (
        INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
        SELECT 'execution', x.id, 'execution.started',
               jsonb_build_object('workflow_id', x.workflow_id::text,
                                  'workflow_version', x.workflow_version, 'status', 'running')
          FROM started AS x
         ORDER BY x.id
        RETURNING id
    ), hint AS (
        SELECT pg_notify('flowledger_outbox', '') AS sent
          FROM (SELECT 1 FROM events LIMIT 1) AS any_started
        UNION ALL
        SELECT pg_notify('flowledger_steps', '')
          FROM (SELECT 1
                  FROM started AS x
                  JOIN execution_steps AS s ON s.execution_id = x.id AND s.status = 'queued'
                 LIMIT 1) AS any_queued
    )
    SELECT count(*) INTO hints FROM hint;
END;
$$;

-- Take or give back the slots of one capped workflow (delta), then start pending
-- executions when slots were given back or executions were made pending. Skips a workflow
-- without a cap (its running is NULL).
CREATE FUNCTION settle_run_slots(wid uuid, delta integer, made_pending boolean) RETURNS void
    LANGUAGE plpgsql
AS $$
BEGIN
    IF delta = 0 THEN
        PERFORM 1 FROM workflow_run_slots
         WHERE workflow_id = wid AND running IS NOT NULL
           FOR NO KEY UPDATE;
    ELSE
        UPDATE workflow_run_slots SET running = running + delta
         WHERE workflow_id = wid AND running IS NOT NULL;
    END IF;
    IF FOUND AND (delta < 0 OR made_pending) THEN
        PERFORM start_pending_executions(wid);
    END IF;
END;
$$;

-- Keep the slot counts of capped workflows: an execution entering running or paused takes
-- a slot, one leaving them gives it back. A statement's changes are settled per workflow in
-- workflow_id order, so two statements changing executions of several workflows lock slot
-- rows in the same order and cannot deadlock. Each statement here takes a snapshot of its
-- own (VOLATILE, READ COMMITTED): after settle_run_slots waited for a slot row, the start of
-- pending executions sees what the lock's previous holders committed.
-- Inserts (starts) and deletes: one call per statement, over its transition table.
CREATE FUNCTION count_run_slots() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    change record;
BEGIN
    IF TG_OP = 'INSERT' THEN
        FOR change IN
            SELECT n.workflow_id,
                   count(*) FILTER (WHERE n.status IN ('running', 'paused'))::integer AS delta,
                   bool_or(n.status = 'pending') AS made_pending
              FROM new_rows AS n
             WHERE n.status IN ('running', 'paused', 'pending')
               AND EXISTS (SELECT 1 FROM workflow_run_slots AS s
                            WHERE s.workflow_id = n.workflow_id AND s.running IS NOT NULL)
             GROUP BY n.workflow_id
             ORDER BY n.workflow_id
        LOOP
            PERFORM settle_run_slots(change.workflow_id, change.delta, change.made_pending);
        END LOOP;
    ELSE
        FOR change IN
            SELECT o.workflow_id, -count(*)::integer AS delta
              FROM old_rows AS o
             WHERE o.status IN ('running', 'paused')
               AND EXISTS (SELECT 1 FROM workflow_run_slots AS s
                            WHERE s.workflow_id = o.workflow_id AND s.running IS NOT NULL)
             GROUP BY o.workflow_id
             ORDER BY o.workflow_id
        LOOP
            PERFORM settle_run_slots(change.workflow_id, change.delta, false);
        END LOOP;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER workflow_executions_run_slots_on_insert
    AFTER INSERT ON workflow_executions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_run_slots();

CREATE TRIGGER workflow_executions_run_slots_on_delete
    AFTER DELETE ON workflow_executions
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_run_slots();

-- Updates: no transition table (capturing one costs every UPDATE of the table); a row
-- trigger filtered by WHEN, so an update of other columns fires nothing and the status
-- change of an uncapped workflow's execution costs one index probe (and, for a release,
-- one deferred call that finds no note). An execution of a capped workflow that takes a
-- slot or waits (a start of pending executions, a retry) is counted at once: the
-- statement that moved it holds the slot row already, and a later statement of the same
-- transaction reads the count. One that gives its slot back is noted, in a
-- transaction-local setting, and settled when the transaction commits.
CREATE FUNCTION note_run_slots() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM workflow_run_slots AS s
                    WHERE s.workflow_id = NEW.workflow_id AND s.running IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    IF OLD.status IN ('running', 'paused') AND NEW.status NOT IN ('running', 'paused') THEN
        PERFORM set_config(
            'flowledger.run_slots',
            coalesce(current_setting('flowledger.run_slots', true), '')
                || NEW.workflow_id::text || ';',
            true);
    ELSE
        PERFORM settle_run_slots(NEW.workflow_id,
                                 (NEW.status IN ('running', 'paused'))::integer,
                                 NEW.status = 'pending');
    END IF;
    RETURN NULL;
END;
$$;

-- Releases are settled when the transaction commits (a deferred constraint trigger: its
-- first call settles every note, per workflow in workflow_id order; the others find none).
-- At commit the transaction already holds every execution row it locks, so the slot rows
-- are the last locks it takes: a transaction finishing a child execution (child, parent,
-- then slot) and a child start holding the parent (parent, then slot) cannot wait for each
-- other. The notes are cleared first: a start of pending executions below is a change of
-- its own.
CREATE FUNCTION settle_noted_run_slots() RETURNS trigger
    LANGUAGE plpgsql
AS $$
DECLARE
    noted text := current_setting('flowledger.run_slots', true);
    change record;
BEGIN
    IF noted IS NULL OR noted = '' THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('flowledger.run_slots', '', true);
    FOR change IN
        SELECT e.note::uuid AS workflow_id, -count(*)::integer AS delta
          FROM unnest(string_to_array(rtrim(noted, ';'), ';')) AS e (note)
         GROUP BY 1
         ORDER BY 1
    LOOP
        PERFORM settle_run_slots(change.workflow_id, change.delta, false);
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE TRIGGER workflow_executions_run_slots_on_update
    AFTER UPDATE OF status ON workflow_executions
    FOR EACH ROW
    WHEN ((OLD.status IN ('running', 'paused')) IS DISTINCT FROM
              (NEW.status IN ('running', 'paused'))
          OR (NEW.status = 'pending' AND OLD.status <> 'pending'))
    EXECUTE FUNCTION note_run_slots();

CREATE CONSTRAINT TRIGGER workflow_executions_run_slots_settle
    AFTER UPDATE OF status ON workflow_executions
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (OLD.status IN ('running', 'paused') AND NEW.status NOT IN ('running', 'paused'))
    EXECUTE FUNCTION settle_noted_run_slots();

-- A cap set, changed or lifted. Set: the slot count starts from the executions holding a
-- slot, each locked (FOR SHARE waits for a transaction finishing one, then reads its new
-- status); no execution enters running meanwhile, as starts and retries lock the workflow
-- row this UPDATE holds. Then pending executions start up to the new cap (all of them when
-- it is lifted); a lower cap stops nothing that runs.
CREATE FUNCTION limit_run_slots() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.max_running_executions IS NULL THEN
        UPDATE workflow_run_slots SET running = NULL WHERE workflow_id = NEW.id;
    ELSIF OLD.max_running_executions IS NULL THEN
        UPDATE workflow_run_slots
           SET running = (SELECT count(*)
                            FROM (SELECT 1
                                    FROM workflow_executions AS x
                                   WHERE x.workflow_id = NEW.id
                                     AND x.status IN ('running', 'paused')
                                     FOR SHARE) AS held)
         WHERE workflow_id = NEW.id;
    ELSE
        PERFORM 1 FROM workflow_run_slots WHERE workflow_id = NEW.id FOR NO KEY UPDATE;
    END IF;
    PERFORM start_pending_executions(NEW.id);
    RETURN NULL;
END;
$$;

CREATE TRIGGER workflows_run_slots_on_update
    AFTER UPDATE OF max_running_executions ON workflows
    FOR EACH ROW
    WHEN (NEW.max_running_executions IS DISTINCT FROM OLD.max_running_executions)
    EXECUTE FUNCTION limit_run_slots();

-- Legal status changes of an execution, as in 0012, and a retry of a capped workflow that
-- finds no free slot waits as pending (failed -> pending, as its next attempt).
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
