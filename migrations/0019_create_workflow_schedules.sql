-- When each scheduled workflow fires next, what it fired last, and what it does with the
-- ticks missed while no scheduler ran.
-- depends: 0018_create_tasks

-- One row per workflow whose trigger_type is 'schedule', kept by the triggers below. The
-- cron rule itself stays in workflows.schedule; the scheduler (db.schedules.fire_due)
-- computes next_fire_at from it, since SQL cannot evaluate cron.
CREATE TABLE workflow_schedules (
    workflow_id uuid PRIMARY KEY,
    -- Missed ticks: 'latest' fires only the most recent one, 'all' every one of them, at
    -- most max_catch_up (the most recent).
    catch_up text NOT NULL DEFAULT 'latest',
    -- squawk-ignore prefer-bigint-over-int -- bounded: 1..1000
    max_catch_up integer NOT NULL DEFAULT 10,
    -- When the current rule was set: its first tick is the first one after this.
    rule_set_at timestamptz NOT NULL DEFAULT now(),
    -- The next tick to fire; NULL until a scheduler computed it for the current rule.
    next_fire_at timestamptz,
    -- The last tick fired.
    last_fired_at timestamptz,
    -- Why the rule cannot be evaluated (written before rules were checked); such a
    -- schedule does not fire until its rule is changed.
    error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT workflow_schedules_workflow_id_fkey FOREIGN KEY (workflow_id)
        REFERENCES workflows (id) ON DELETE CASCADE,
    CONSTRAINT workflow_schedules_catch_up_check CHECK (catch_up IN ('latest', 'all')),
    CONSTRAINT workflow_schedules_max_catch_up_check CHECK (max_catch_up BETWEEN 1 AND 1000),
    CONSTRAINT workflow_schedules_error_check
        CHECK (error IS NULL OR length(btrim(error)) > 0)
);

-- Plain CREATE INDEX, not CONCURRENTLY: the table is new in this transaction.
-- What the scheduler reads: the ticks due, earliest first.
CREATE INDEX workflow_schedules_next_fire_idx ON workflow_schedules (next_fire_at)
    WHERE error IS NULL;
-- Rules new or changed, waiting for a scheduler to plan their first tick.
CREATE INDEX workflow_schedules_unplanned_idx ON workflow_schedules (workflow_id)
    WHERE next_fire_at IS NULL AND error IS NULL;

CREATE TRIGGER workflow_schedules_set_updated_at
    BEFORE UPDATE ON workflow_schedules
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- A workflow that gets a cron rule gets a schedule row; a changed rule is planned afresh
-- (from now on) and clears an error; a workflow that loses its rule loses the row. The
-- catch-up policy stays across rule changes.
CREATE FUNCTION sync_workflow_schedule() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.schedule IS NULL THEN
        DELETE FROM workflow_schedules WHERE workflow_id = NEW.id;
    ELSE
        INSERT INTO workflow_schedules (workflow_id)
        VALUES (NEW.id)
        ON CONFLICT (workflow_id) DO UPDATE
            SET rule_set_at = now(), next_fire_at = NULL, error = NULL;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER workflows_schedule_on_insert
    AFTER INSERT ON workflows
    FOR EACH ROW
    WHEN (NEW.schedule IS NOT NULL)
    EXECUTE FUNCTION sync_workflow_schedule();

CREATE TRIGGER workflows_schedule_on_update
    AFTER UPDATE OF schedule ON workflows
    FOR EACH ROW
    WHEN (NEW.schedule IS DISTINCT FROM OLD.schedule)
    EXECUTE FUNCTION sync_workflow_schedule();

-- Workflows scheduled before this migration: planned from now on.
INSERT INTO workflow_schedules (workflow_id)
SELECT id FROM workflows WHERE schedule IS NOT NULL;
