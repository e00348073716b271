-- A start that waited for its workflow's row lock created the execution of the version it
-- read from the locked row with no steps (so completed at once) whenever a stage edit or
-- a definition change had made that version while the start waited: the statement's
-- snapshot, taken before the wait, could not see the new version's stage snapshot.
-- start_executions now reads the stages through this function, whose snapshot is taken
-- after the lock.

-- The stages an execution of one workflow version starts from: the version's stage
-- snapshot, each with its width (one step per with_items element) and the number of steps
-- it waits for. VOLATILE on purpose: each of its statements takes a snapshot of its own
-- when it runs. start_executions calls it after locking the workflow's row, and a start
-- that waited for that lock (a stage edit or definition change made a new version
-- meanwhile) reads the newest version from the locked row; the statement's own snapshot,
-- taken before the wait, cannot see that version's stages, this function's can.
CREATE FUNCTION version_stages_to_start(wid uuid, ver integer)
    RETURNS TABLE (id uuid, stage_id uuid, name text, "position" integer,
                   depends_on text[], retry_policy jsonb, timeout_seconds integer,
                   queue text, concurrency jsonb, rate_limit jsonb, width integer,
                   waits_for integer)
    LANGUAGE plpgsql VOLATILE
    -- A version has a few stages, not the 1,000 rows the planner assumes of a function:
    -- with that default the start's generic plan cost 173,000, above jit_above_cost, and
    -- a server with JIT compiled it on every call (100 ms a start on PostgreSQL 15).
    ROWS 10
AS $$
BEGIN
    RETURN QUERY
    SELECT v.id, v.stage_id, v.name, v.position, v.depends_on, v.retry_policy,
           v.timeout_seconds, v.queue, v.concurrency, v.rate_limit,
           CASE WHEN v.with_items IS NULL THEN 1 ELSE jsonb_array_length(v.with_items) END,
           (SELECT coalesce(sum(CASE WHEN d.with_items IS NULL THEN 1
                                     ELSE jsonb_array_length(d.with_items) END), 0)::int
              FROM workflow_version_stages AS d
             WHERE d.workflow_id = wid AND d.version = ver AND d.name = ANY (v.depends_on))
      FROM workflow_version_stages AS v
     WHERE v.workflow_id = wid AND v.version = ver;
END;
$$;
