-- Undo 0022: no concurrency or rate limits; the stage functions as 0020 made them.
-- squawk-ignore-file ban-drop-table, ban-drop-column, ban-drop-function -- undoing 0022 restores what 0021 left

DROP TRIGGER execution_steps_release_concurrency_slot ON execution_steps;
DROP FUNCTION release_concurrency_slot();
DROP FUNCTION render_limit_key(text, jsonb);
DROP TABLE rate_slots;
DROP TABLE concurrency_slots;
ALTER TABLE execution_steps DROP COLUMN rate_window;
ALTER TABLE execution_steps DROP COLUMN rate_limit;
ALTER TABLE execution_steps DROP COLUMN rate_key;
ALTER TABLE execution_steps DROP COLUMN concurrency_limit;
ALTER TABLE execution_steps DROP COLUMN concurrency_key;

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

ALTER TABLE workflow_version_stages DROP COLUMN rate_limit;
ALTER TABLE workflow_version_stages DROP COLUMN concurrency;
ALTER TABLE workflow_stages DROP COLUMN rate_limit;
ALTER TABLE workflow_stages DROP COLUMN concurrency;
