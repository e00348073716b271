-- Orchestration: stages run in dependency order, on the stage snapshot of the workflow
-- version their execution pinned; failures skip what depends on them; runs can be retried
-- and can start child runs.
-- depends: 0011_add_workflows_name_index

-- depends_on: NULL (the default) runs a stage after the one before it by position; '{}'
-- makes it a root; a list of names makes a DAG. Before this migration '{}' was what every
-- stage had when nothing was declared: such stages become ordered.
-- squawk-ignore ban-drop-not-null -- NULL gains a meaning (ordered); clients that write lists are unaffected
ALTER TABLE workflow_stages ALTER COLUMN depends_on DROP NOT NULL;
-- squawk-ignore ban-drop-default -- the new default is NULL: an omitted depends_on means "ordered"
ALTER TABLE workflow_stages ALTER COLUMN depends_on DROP DEFAULT;
UPDATE workflow_stages SET depends_on = NULL WHERE depends_on = '{}';

-- fail_fast: a step failed for good fails its execution at once and cancels the rest;
-- continue: independent branches run to the end, then the execution fails.
-- squawk-ignore adding-field-with-default -- a constant default: no table rewrite since PostgreSQL 11
ALTER TABLE workflows ADD COLUMN failure_mode text NOT NULL DEFAULT 'fail_fast'
    CONSTRAINT workflows_failure_mode_check CHECK (failure_mode IN ('fail_fast', 'continue'));

-- The stages of one workflow version, frozen: what its executions claim. Dependencies are
-- stored resolved (a NULL depends_on made explicit), with the direct dependents (promoted
-- when a step completes) and every transitive dependent (skipped when a step fails).
CREATE TABLE workflow_version_stages (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    workflow_id uuid NOT NULL,
    -- squawk-ignore prefer-bigint-over-int -- bounded: mirrors workflow_versions.version
    version integer NOT NULL,
    -- The live stage this was copied from; no FK: live stages are edited and removed.
    stage_id uuid,
    -- squawk-ignore prefer-bigint-over-int -- bounded: stages of one workflow
    position integer NOT NULL,
    name text NOT NULL,
    action_ref text NOT NULL,
    depends_on text[] NOT NULL,
    dependents text[] NOT NULL,
    downstream text[] NOT NULL,
    config jsonb NOT NULL,
    with_items jsonb,
    retry_policy jsonb NOT NULL,
    -- squawk-ignore prefer-bigint-over-int -- bounded: seconds, int4 spans 68 years
    timeout_seconds integer NOT NULL,
    CONSTRAINT workflow_version_stages_version_fkey FOREIGN KEY (workflow_id, version)
        REFERENCES workflow_versions (workflow_id, version) ON DELETE CASCADE,
    -- Also the index of workflow_version_stages_version_fkey (leading columns).
    CONSTRAINT workflow_version_stages_name_key UNIQUE (workflow_id, version, name)
);

CREATE TRIGGER workflow_version_stages_immutable
    BEFORE UPDATE ON workflow_version_stages
    FOR EACH ROW EXECUTE FUNCTION reject_update();

-- The live stages of a workflow with their dependencies resolved: a NULL depends_on
-- becomes the previous stage by position (none for the first); with every direct and
-- transitive dependent. The walk is a UNION over a finite set of pairs, so it ends on a
-- cycle too (check_workflow_stages refuses those).
CREATE FUNCTION workflow_stage_graph(wid uuid)
    RETURNS TABLE (stage_id uuid, "position" integer, name text, action_ref text,
                   depends_on text[], dependents text[], downstream text[], config jsonb,
                   with_items jsonb, retry_policy jsonb, timeout_seconds integer)
    LANGUAGE sql STABLE
AS $$
    WITH RECURSIVE live AS (
        SELECT s.id, s.position, s.name, s.action_ref, s.config, s.with_items,
               s.retry_policy, s.timeout_seconds,
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
           l.config, l.with_items, l.retry_policy, l.timeout_seconds
      FROM live AS l
     ORDER BY l.position
$$;

-- Refuse a dependency graph no execution could run: a name that is no stage (Conflict
-- when the stage existed in the workflow's current version, i.e. it was removed or
-- renamed while others depend on it) or a cycle.
CREATE FUNCTION check_workflow_stages(wid uuid) RETURNS void
    LANGUAGE plpgsql
AS $$
DECLARE
    dangling record;
    cyclic text;
BEGIN
    SELECT g.name, d.dep INTO dangling
      FROM workflow_stage_graph(wid) AS g
     CROSS JOIN LATERAL unnest(g.depends_on) AS d (dep)
     WHERE NOT EXISTS (SELECT 1 FROM workflow_stages AS s
                        WHERE s.workflow_id = wid AND s.name = d.dep)
     ORDER BY g.position, d.dep
     LIMIT 1;
    IF FOUND THEN
        IF EXISTS (SELECT 1
                     FROM workflows AS w
                     JOIN workflow_version_stages AS v
                       ON v.workflow_id = w.id AND v.version = w.version
                    WHERE w.id = wid AND v.name = dangling.dep) THEN
            RAISE EXCEPTION 'stage "%" cannot be removed or renamed: stage "%" depends on it',
                            dangling.dep, dangling.name
                USING ERRCODE = 'restrict_violation',
                      CONSTRAINT = 'workflow_stages_depends_on_known',
                      TABLE = 'workflow_stages';
        END IF;
        RAISE EXCEPTION 'stage "%" depends on unknown stage "%"', dangling.name, dangling.dep
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'workflow_stages_depends_on_known',
                  TABLE = 'workflow_stages';
    END IF;
    WITH RECURSIVE edges AS (
        SELECT g.name, d.dep
          FROM workflow_stage_graph(wid) AS g
         CROSS JOIN LATERAL unnest(g.depends_on) AS d (dep)
    ), walk (origin, node) AS (
        SELECT e.name, e.dep FROM edges AS e
        UNION
        SELECT w.origin, e.dep FROM walk AS w JOIN edges AS e ON e.name = w.node
    )
    SELECT string_agg(format('"%s"', w.origin), ', ' ORDER BY w.origin) INTO cyclic
      FROM walk AS w
     WHERE w.origin = w.node;
    IF cyclic IS NOT NULL THEN
        RAISE EXCEPTION 'stages % form a dependency cycle', cyclic
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'workflow_stages_acyclic',
                  TABLE = 'workflow_stages';
    END IF;
END;
$$;

-- Freeze the live stages (checked) as the stage snapshot of one workflow version.
CREATE FUNCTION copy_stage_snapshot(wid uuid, ver integer) RETURNS void
    LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM check_workflow_stages(wid);
    INSERT INTO workflow_version_stages (workflow_id, version, stage_id, position, name,
                                         action_ref, depends_on, dependents, downstream,
                                         config, with_items, retry_policy, timeout_seconds)
    SELECT wid, ver, g.stage_id, g.position, g.name, g.action_ref, g.depends_on, g.dependents,
           g.downstream, g.config, g.with_items, g.retry_policy, g.timeout_seconds
      FROM workflow_stage_graph(wid) AS g;
END;
$$;

-- Make the live stages the workflow's current version: unchanged stages keep the version,
-- changed ones make a new version (definition unchanged) with its own snapshot. Locks the
-- workflow row first, so concurrent stage edits of one workflow snapshot one at a time.
-- The current version, or NULL when the workflow is gone.
CREATE FUNCTION snapshot_workflow_stages(wid uuid) RETURNS integer
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
                                           g.timeout_seconds)
                         ORDER BY g.position)
          FROM workflow_stage_graph(wid) AS g)
       IS DISTINCT FROM
       (SELECT jsonb_agg(jsonb_build_array(v.stage_id, v.name, v.action_ref, v.depends_on,
                                           v.config, v.with_items, v.retry_policy,
                                           v.timeout_seconds)
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

-- version belongs to the database: a definition change, or a stage change announced by
-- snapshot_workflow_stages, bumps it and snapshots the definition and the stages; any
-- other attempt to change it is undone.
CREATE OR REPLACE FUNCTION bump_workflow_version() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.definition IS DISTINCT FROM OLD.definition
       OR NEW.definition_yaml IS DISTINCT FROM OLD.definition_yaml
       OR current_setting('flowledger.restage', true) = NEW.id::text THEN
        NEW.version := OLD.version + 1;
        INSERT INTO workflow_versions (workflow_id, version, definition_yaml, definition)
        VALUES (NEW.id, NEW.version, NEW.definition_yaml, NEW.definition);
        PERFORM copy_stage_snapshot(NEW.id, NEW.version);
    ELSE
        NEW.version := OLD.version;
    END IF;
    RETURN NEW;
END;
$$;

-- Any stage write, by any client, is snapshotted before its transaction commits (the
-- repositories call snapshot_workflow_stages right away; this catches every other path).
CREATE FUNCTION snapshot_stages_on_change() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM snapshot_workflow_stages(OLD.workflow_id);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM snapshot_workflow_stages(NEW.workflow_id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER workflow_stages_snapshot
    AFTER INSERT OR UPDATE OR DELETE ON workflow_stages
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION snapshot_stages_on_change();

-- The stages of every workflow as it stands become the snapshot of its current version
-- (older versions have no stage history).
INSERT INTO workflow_version_stages (workflow_id, version, stage_id, position, name,
                                     action_ref, depends_on, dependents, downstream, config,
                                     with_items, retry_policy, timeout_seconds)
SELECT w.id, w.version, g.stage_id, g.position, g.name, g.action_ref, g.depends_on,
       g.dependents, g.downstream, g.config, g.with_items, g.retry_policy, g.timeout_seconds
  FROM workflows AS w
 CROSS JOIN LATERAL workflow_stage_graph(w.id) AS g;

-- Executions pin their failure mode, and may run on behalf of a step of their parent. New
-- constraints on existing tables are added NOT VALID (new rows are checked at once) and
-- validated by 0015, in a transaction of its own that does not block reads and writes.
-- squawk-ignore adding-field-with-default -- a constant default: no table rewrite since PostgreSQL 11
ALTER TABLE workflow_executions ADD COLUMN failure_mode text NOT NULL DEFAULT 'fail_fast'
    CONSTRAINT workflow_executions_failure_mode_check
        CHECK (failure_mode IN ('fail_fast', 'continue'));
ALTER TABLE workflow_executions ADD COLUMN parent_step_id uuid;
ALTER TABLE workflow_executions ADD CONSTRAINT workflow_executions_parent_step_id_fkey
    FOREIGN KEY (parent_step_id) REFERENCES execution_steps (id) ON DELETE CASCADE NOT VALID;
ALTER TABLE workflow_executions ADD CONSTRAINT workflow_executions_parent_step_check
    CHECK (parent_step_id IS NULL OR parent_execution_id IS NOT NULL) NOT VALID;

-- Steps point at the stage snapshot they run, and count the dependency steps not yet
-- completed: a 'pending' step whose count reaches 0 is queued.
ALTER TABLE execution_steps ADD COLUMN version_stage_id uuid;
ALTER TABLE execution_steps ADD CONSTRAINT execution_steps_version_stage_id_fkey
    FOREIGN KEY (version_stage_id) REFERENCES workflow_version_stages (id) NOT VALID;
-- squawk-ignore adding-field-with-default, prefer-bigint-over-int -- a constant default: no table rewrite since PostgreSQL 11; bounded: steps of one execution
ALTER TABLE execution_steps ADD COLUMN deps_remaining integer NOT NULL DEFAULT 0
    CONSTRAINT execution_steps_deps_remaining_check CHECK (deps_remaining >= 0);
-- 'waiting': a step that started a child execution waits for it (no lease, not claimable).
-- squawk-ignore ban-drop-constraint -- replaced at once by a wider check (validated in 0015)
ALTER TABLE execution_steps DROP CONSTRAINT execution_steps_status_check;
ALTER TABLE execution_steps ADD CONSTRAINT execution_steps_status_check CHECK (
    status IN ('pending', 'queued', 'running', 'waiting', 'completed', 'failed', 'skipped',
               'cancelled', 'timed_out')
) NOT VALID;

-- Unfinished steps of existing executions run on the snapshot of their workflow's current
-- version (the only one with a stage snapshot).
UPDATE execution_steps AS s
   SET version_stage_id = v.id
  FROM workflow_executions AS e, workflows AS w, workflow_version_stages AS v
 WHERE e.id = s.execution_id AND w.id = e.workflow_id
   AND v.workflow_id = w.id AND v.version = w.version AND v.name = s.task_name
   AND s.status IN ('pending', 'queued', 'running');

-- Legal status changes of a step. running -> queued is a retry or a lost lease being
-- requeued; running -> waiting starts a child execution; a pending step is skipped when
-- something it depends on failed. completed is final; failed, timed_out, skipped and
-- cancelled go back to pending or queued only when their execution is retried.
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
            WHEN 'waiting' THEN NEW.status IN ('completed', 'failed', 'cancelled')
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

-- Legal status changes of an execution. Terminal states never change, except that a
-- failed execution runs again when it is retried, which counts a new attempt.
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
