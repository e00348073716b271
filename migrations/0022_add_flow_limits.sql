-- Flow control per stage: a concurrency key (at most `limit` steps of one key run at once,
-- across every worker) and a rate limit (at most `limit` steps of one key start in any
-- window of `per_seconds`). Both keys are templates over the execution's parameters
-- ("tenant:{tenant}"), rendered once when the execution starts. Each rendered key owns
-- numbered slots; a claim takes a free slot of each key a step names, by locking the slot's
-- row, or leaves the step queued.
-- depends: 0021_add_steps_queue_claim_index
-- squawk-ignore-file ban-drop-function -- workflow_stage_graph gains columns; a function's
-- result type cannot change in place, and nothing stores a reference to it

-- {"key": template, "limit": n}: a template is text with {name} placeholders (a parameter
-- of the execution, as text; a missing one renders empty). CASE, not AND, below: a cast or
-- a key removal must not run (and fail) on a value of the wrong type.
ALTER TABLE workflow_stages ADD COLUMN concurrency jsonb;
ALTER TABLE workflow_stages ADD CONSTRAINT workflow_stages_concurrency_check CHECK (
    CASE WHEN concurrency IS NULL THEN true
         WHEN jsonb_typeof(concurrency) <> 'object' THEN false
         WHEN concurrency - 'key' - 'limit' <> '{}'::jsonb THEN false
         WHEN jsonb_typeof(concurrency -> 'key') IS DISTINCT FROM 'string'
              OR jsonb_typeof(concurrency -> 'limit') IS DISTINCT FROM 'number' THEN false
         ELSE length(concurrency ->> 'key') <= 200
              AND (concurrency ->> 'key') ~ '^([^{}]|\{[a-z_][a-z0-9_]{0,62}\})+$'
              AND (concurrency ->> 'limit')::numeric BETWEEN 1 AND 10000
              AND (concurrency ->> 'limit')::numeric = trunc((concurrency ->> 'limit')::numeric)
    END
) NOT VALID;
-- {"key": template, "limit": n, "per_seconds": s}: at most n starts in any s seconds.
ALTER TABLE workflow_stages ADD COLUMN rate_limit jsonb;
ALTER TABLE workflow_stages ADD CONSTRAINT workflow_stages_rate_limit_check CHECK (
    CASE WHEN rate_limit IS NULL THEN true
         WHEN jsonb_typeof(rate_limit) <> 'object' THEN false
         WHEN rate_limit - 'key' - 'limit' - 'per_seconds' <> '{}'::jsonb THEN false
         WHEN jsonb_typeof(rate_limit -> 'key') IS DISTINCT FROM 'string'
              OR jsonb_typeof(rate_limit -> 'limit') IS DISTINCT FROM 'number'
              OR jsonb_typeof(rate_limit -> 'per_seconds') IS DISTINCT FROM 'number' THEN false
         ELSE length(rate_limit ->> 'key') <= 200
              AND (rate_limit ->> 'key') ~ '^([^{}]|\{[a-z_][a-z0-9_]{0,62}\})+$'
              AND (rate_limit ->> 'limit')::numeric BETWEEN 1 AND 10000
              AND (rate_limit ->> 'limit')::numeric = trunc((rate_limit ->> 'limit')::numeric)
              AND (rate_limit ->> 'per_seconds')::numeric > 0
              AND (rate_limit ->> 'per_seconds')::numeric <= 31622400
    END
) NOT VALID;
ALTER TABLE workflow_version_stages ADD COLUMN concurrency jsonb;
ALTER TABLE workflow_version_stages ADD COLUMN rate_limit jsonb;
-- A step's keys as rendered at start, with the limits of its stage snapshot.
ALTER TABLE execution_steps ADD COLUMN concurrency_key text;
-- squawk-ignore prefer-bigint-over-int -- bounded: 1..10000
ALTER TABLE execution_steps ADD COLUMN concurrency_limit integer;
ALTER TABLE execution_steps ADD COLUMN rate_key text;
-- squawk-ignore prefer-bigint-over-int -- bounded: 1..10000
ALTER TABLE execution_steps ADD COLUMN rate_limit integer;
ALTER TABLE execution_steps ADD COLUMN rate_window interval;
-- NOT VALID, validated by 0023 (every existing row holds NULLs).
ALTER TABLE execution_steps ADD CONSTRAINT execution_steps_concurrency_check CHECK (
    (concurrency_key IS NULL) = (concurrency_limit IS NULL)
    AND concurrency_limit BETWEEN 1 AND 10000
) NOT VALID;
ALTER TABLE execution_steps ADD CONSTRAINT execution_steps_rate_limit_check CHECK (
    (rate_key IS NULL) = (rate_limit IS NULL) AND (rate_key IS NULL) = (rate_window IS NULL)
    AND rate_limit BETWEEN 1 AND 10000 AND rate_window > interval '0'
) NOT VALID;

-- The slots of each concurrency key: slot n is free (step_id NULL) or held by the running
-- step of that key that took it. A claim takes a free slot numbered up to the step's limit
-- by locking its row (a concurrent claim skips a locked slot, and re-reads a slot freed or
-- taken meanwhile at its newest version); the step gives it back in the transaction that
-- ends its run (execution_steps_release_concurrency_slot). So no more running steps of a
-- key than slots up to their limit exist, in every snapshot.
CREATE TABLE concurrency_slots (
    key text NOT NULL,
    -- squawk-ignore prefer-bigint-over-int -- bounded: 1..10000
    slot integer NOT NULL,
    step_id uuid,
    CONSTRAINT concurrency_slots_pkey PRIMARY KEY (key, slot),
    CONSTRAINT concurrency_slots_slot_check CHECK (slot BETWEEN 1 AND 10000),
    -- A deleted step (its execution pruned) frees its slot.
    CONSTRAINT concurrency_slots_step_id_fkey FOREIGN KEY (step_id)
        REFERENCES execution_steps (id) ON DELETE SET NULL
);
-- A step holds at most one slot; also the index of concurrency_slots_step_id_fkey and what
-- a release finds its slot by.
CREATE UNIQUE INDEX concurrency_slots_step_id_key ON concurrency_slots (step_id)
    WHERE step_id IS NOT NULL;

-- The slots of each rate-limit key: a slot is free once its last start is a window old. A
-- claim takes free slots by locking their rows and stamps them with the claim's time, so a
-- key with n slots starts at most n steps in any window.
CREATE TABLE rate_slots (
    key text NOT NULL,
    -- squawk-ignore prefer-bigint-over-int -- bounded: 1..10000
    slot integer NOT NULL,
    used_at timestamptz NOT NULL DEFAULT '-infinity',
    CONSTRAINT rate_slots_pkey PRIMARY KEY (key, slot),
    CONSTRAINT rate_slots_slot_check CHECK (slot BETWEEN 1 AND 10000)
);
-- A claim reads a key's least recently used slots first.
CREATE INDEX rate_slots_key_used_at_idx ON rate_slots (key, used_at);

-- The key of a concurrency or rate limit for one execution: the template with each {name}
-- replaced by the parameter's text (empty when missing), one pass (a value is never read
-- as a template). A key over 200 characters is cut to 167 and the md5 of the whole added,
-- so it stays indexable and distinct.
CREATE FUNCTION render_limit_key(template text, parameters jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE WHEN length(k.rendered) <= 200 THEN k.rendered
                ELSE left(k.rendered, 167) || '#' || md5(k.rendered) END
      FROM (SELECT coalesce(string_agg(
                       CASE WHEN m.token[1] LIKE '{%'
                            THEN coalesce(parameters ->> substr(m.token[1], 2,
                                                                length(m.token[1]) - 2), '')
                            ELSE m.token[1] END,
                       '' ORDER BY m.n), '') AS rendered
              FROM regexp_matches(template, '\{[a-z_][a-z0-9_]*\}|[^{}]+|[{}]', 'g')
                   WITH ORDINALITY AS m (token, n)) AS k
$$;

-- A keyed step that stops running gives its concurrency slot back, in the same transaction
-- (completed, failed, timed out, requeued by a retry, a sleep or the reaper, released,
-- waiting, cancelled), and wakes the workers: a step of that key may be claimable now.
CREATE FUNCTION release_concurrency_slot() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    UPDATE concurrency_slots SET step_id = NULL WHERE step_id = OLD.id;
    PERFORM pg_notify('flowledger_steps', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER execution_steps_release_concurrency_slot
    AFTER UPDATE OF status ON execution_steps
    FOR EACH ROW
    WHEN (OLD.status = 'running' AND NEW.status <> 'running'
          AND OLD.concurrency_key IS NOT NULL)
    EXECUTE FUNCTION release_concurrency_slot();

DROP FUNCTION workflow_stage_graph(uuid);

-- The live stages of a workflow with their dependencies resolved: a NULL depends_on
-- becomes the previous stage by position (none for the first); with every direct and
-- transitive dependent. The walk is a UNION over a finite set of pairs, so it ends on a
-- cycle too (check_workflow_stages refuses those).
CREATE FUNCTION workflow_stage_graph(wid uuid)
    RETURNS TABLE (stage_id uuid, "position" integer, name text, action_ref text,
                   depends_on text[], dependents text[], downstream text[], config jsonb,
                   with_items jsonb, retry_policy jsonb, timeout_seconds integer,
                   queue text, concurrency jsonb, rate_limit jsonb)
    LANGUAGE sql STABLE
AS $$
    WITH RECURSIVE live AS (
        SELECT s.id, s.position, s.name, s.action_ref, s.config, s.with_items,
               s.retry_policy, s.timeout_seconds, s.queue, s.concurrency, s.rate_limit,
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
           l.config, l.with_items, l.retry_policy, l.timeout_seconds, l.queue,
           l.concurrency, l.rate_limit
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
                                         queue, concurrency, rate_limit)
    SELECT wid, ver, g.stage_id, g.position, g.name, g.action_ref, g.depends_on, g.dependents,
           g.downstream, g.config, g.with_items, g.retry_policy, g.timeout_seconds,
           g.queue, g.concurrency, g.rate_limit
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
                                           g.timeout_seconds, g.queue, g.concurrency,
                                           g.rate_limit)
                         ORDER BY g.position)
          FROM workflow_stage_graph(wid) AS g)
       IS DISTINCT FROM
       (SELECT jsonb_agg(jsonb_build_array(v.stage_id, v.name, v.action_ref, v.depends_on,
                                           v.config, v.with_items, v.retry_policy,
                                           v.timeout_seconds, v.queue, v.concurrency,
                                           v.rate_limit)
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
