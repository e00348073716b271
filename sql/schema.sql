-- flowledger: the current schema, as applying every migration in migrations/
-- leaves it. Read this file to learn the schema; change it only together with
-- a new migration (the test suite checks that both produce the same database).
--
-- Load into an empty database with:
--   psql -v ON_ERROR_STOP=1 -f sql/schema.sql
--
-- Conventions:
--   * Everything lives in the public schema. Keys are time-ordered UUIDv7
--     (uuid_generate_v7()), except configurations (text key), step_logs
--     (bigint identity, with logged_at: it is partitioned by month) and the
--     memory_module_items link table.
--   * Mutable tables carry created_at/updated_at; one trigger function,
--     set_updated_at(), bumps updated_at when a row really changes.
--     workflow_versions and memory_context_packs are write-once.
--   * Enumerations are text + CHECK. Constraints are named
--     <table>_<what>_check, <table>_<cols>_key, <table>_<col>_fkey; indexes
--     <table>_<cols>_idx. Triggers that enforce rules raise check_violation
--     (SQLSTATE 23514) with the trigger's name as the constraint name.
--   * Every foreign key has an index (its own, or one it leads).

-- ============================================================================
-- Shared functions
-- ============================================================================

-- uuid_generate_v7(): the built-in uuidv7() on PostgreSQL 18+, else the same layout
-- computed in PL/pgSQL (see 0027 for the measured cost of each).
DO $do$
BEGIN
    IF current_setting('server_version_num')::integer >= 180000 THEN
        CREATE OR REPLACE FUNCTION uuid_generate_v7() RETURNS uuid
            LANGUAGE sql VOLATILE PARALLEL SAFE
        AS $$
            -- Time-ordered UUIDv7 (RFC 9562), the server's own (PostgreSQL 18+).
            SELECT uuidv7()
        $$;
    ELSE
        CREATE OR REPLACE FUNCTION uuid_generate_v7() RETURNS uuid
            LANGUAGE plpgsql VOLATILE PARALLEL SAFE
        AS $$
        DECLARE
            -- The clock, read once: microseconds since the Unix epoch.
            us bigint := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
        BEGIN
            -- Time-ordered UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, the version
            -- nibble, 12 bits of sub-millisecond fraction ("method 3": ids made by one
            -- backend sort in creation order at microsecond resolution), then the variant
            -- and 62 random bits of gen_random_uuid(), whose variant bits already are the
            -- RFC ones.
            RETURN encode(
                       overlay(uuid_send(gen_random_uuid())
                               PLACING int8send(((us / 1000) << 16)
                                                | (7 << 12)
                                                | ((us % 1000) * 4096 / 1000))
                               FROM 1 FOR 8),
                       'hex')::uuid;
        END;
        $$;
    END IF;
END
$do$;

-- BEFORE UPDATE trigger of every mutable table: bump updated_at only when the
-- row really changed, so a no-op UPDATE keeps the timestamp. Trigger arguments
-- name columns to leave out of the comparison: stored generated columns are
-- still NULL in NEW while BEFORE triggers run and would make every update look
-- like a change.
CREATE FUNCTION set_updated_at() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_NARGS = 0 THEN
        IF NEW IS DISTINCT FROM OLD THEN
            NEW.updated_at := now();
        END IF;
    ELSIF (to_jsonb(NEW) - TG_ARGV) IS DISTINCT FROM (to_jsonb(OLD) - TG_ARGV) THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$$;

-- BEFORE UPDATE trigger of write-once tables. Raised as a check violation
-- named after the trigger, so callers map it like any other constraint.
CREATE FUNCTION reject_update() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION '% rows are immutable', TG_TABLE_NAME
        USING ERRCODE = 'check_violation',
              CONSTRAINT = TG_NAME,
              SCHEMA = TG_TABLE_SCHEMA,
              TABLE = TG_TABLE_NAME;
END;
$$;

-- ============================================================================
-- Identity: users, API keys
-- ============================================================================

CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    -- Uniqueness is case-insensitive: see users_email_key below.
    email text NOT NULL,
    display_name text NOT NULL,
    role text NOT NULL DEFAULT 'developer',
    is_active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_check CHECK (email ~ '^[^@\s]+@[^@\s]+$'),
    CONSTRAINT users_display_name_check CHECK (length(btrim(display_name)) > 0),
    CONSTRAINT users_role_check CHECK (role IN ('admin', 'developer', 'viewer'))
);

-- An expression index, not a constraint: UNIQUE constraints cannot be on
-- lower(email). Lookups must use lower(email) = lower(%(email)s) to hit it.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
-- Keyset listing of users, newest first (added by 0010, built CONCURRENTLY there).
CREATE INDEX users_created_idx ON users (created_at, id);

CREATE TRIGGER users_set_updated_at
    BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Only a hash of the secret is stored; the public prefix finds the row, then
-- the caller compares hashes. last_used_at is written lazily (at most every
-- few minutes per key), not on every request.
CREATE TABLE api_keys (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    user_id uuid NOT NULL,
    name text NOT NULL,
    prefix text NOT NULL,
    secret_hash bytea NOT NULL,
    scopes text[] NOT NULL DEFAULT '{}',
    expires_at timestamptz,
    revoked_at timestamptz,
    last_used_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT api_keys_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT api_keys_name_check CHECK (length(btrim(name)) > 0),
    CONSTRAINT api_keys_prefix_check CHECK (prefix ~ '^[A-Za-z0-9_]{8,32}$'),
    -- SHA-256 (or HMAC-SHA-256) digest of the secret.
    CONSTRAINT api_keys_secret_hash_check CHECK (octet_length(secret_hash) = 32),
    CONSTRAINT api_keys_scopes_check CHECK (array_position(scopes, NULL) IS NULL),
    CONSTRAINT api_keys_prefix_key UNIQUE (prefix),
    -- Also the index of api_keys_user_id_fkey (leading column).
    CONSTRAINT api_keys_user_id_name_key UNIQUE (user_id, name)
);

CREATE TRIGGER api_keys_set_updated_at
    BEFORE UPDATE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ============================================================================
-- Catalog: packs (actions reference workflows, so they come after them)
-- ============================================================================

CREATE TABLE packs (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    -- Namespace of the pack's actions: action "core.http" lives in pack "core".
    ref text NOT NULL,
    label text NOT NULL,
    description text NOT NULL DEFAULT '',
    version text NOT NULL DEFAULT '0.1.0',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT packs_ref_check CHECK (ref ~ '^[a-z][a-z0-9_]*$'),
    CONSTRAINT packs_label_check CHECK (length(btrim(label)) > 0),
    CONSTRAINT packs_version_check CHECK (length(btrim(version)) > 0),
    CONSTRAINT packs_ref_key UNIQUE (ref)
);

CREATE TRIGGER packs_set_updated_at
    BEFORE UPDATE ON packs
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ============================================================================
-- Workflows: definitions, versions, stages
-- ============================================================================

CREATE TABLE workflows (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    -- RESTRICT: a user who owns workflows is deactivated, not deleted.
    owner_id uuid NOT NULL,
    pack_id uuid,
    name text NOT NULL,
    description text NOT NULL DEFAULT '',
    status text NOT NULL DEFAULT 'draft',
    enabled boolean NOT NULL DEFAULT true,
    trigger_type text NOT NULL DEFAULT 'manual',
    -- Cron expression; present exactly when trigger_type = 'schedule'.
    schedule text,
    -- The definition as written (YAML) and decomposed; both are versioned.
    definition_yaml text NOT NULL DEFAULT '',
    definition jsonb NOT NULL DEFAULT '{}',
    param_schema jsonb NOT NULL DEFAULT '{}',
    out_schema jsonb NOT NULL DEFAULT '{}',
    tags text[] NOT NULL DEFAULT '{}',
    -- Explicit regconfigs keep the expression immutable, as a generated
    -- column requires. Names are indexed unstemmed, descriptions stemmed, so
    -- a query ORs both parses: websearch_to_tsquery('simple', q) ||
    -- websearch_to_tsquery('english', q).
    search tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('simple'::regconfig, name), 'A')
        || setweight(to_tsvector('english'::regconfig, coalesce(description, '')), 'B')
    ) STORED,
    -- Definition version, maintained by workflows_version_on_update.
    version integer NOT NULL DEFAULT 1,
    -- Optimistic-locking counter, bumped by every application update.
    row_version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- fail_fast: a step failed for good fails its execution at once and cancels
    -- the rest; continue: independent branches run to the end, then it fails.
    failure_mode text NOT NULL DEFAULT 'fail_fast',
    -- At most this many of its executions hold a slot (running or paused) at once; NULL:
    -- no cap. See workflow_run_slots.
    max_running_executions integer,
    CONSTRAINT workflows_owner_id_fkey FOREIGN KEY (owner_id)
        REFERENCES users (id) ON DELETE RESTRICT,
    CONSTRAINT workflows_pack_id_fkey FOREIGN KEY (pack_id)
        REFERENCES packs (id) ON DELETE SET NULL,
    CONSTRAINT workflows_name_check CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    CONSTRAINT workflows_status_check CHECK (status IN ('draft', 'active', 'archived')),
    CONSTRAINT workflows_trigger_type_check
        CHECK (trigger_type IN ('manual', 'schedule', 'event', 'webhook')),
    CONSTRAINT workflows_schedule_check
        CHECK ((trigger_type = 'schedule') = (schedule IS NOT NULL)),
    CONSTRAINT workflows_definition_check CHECK (jsonb_typeof(definition) = 'object'),
    CONSTRAINT workflows_param_schema_check CHECK (jsonb_typeof(param_schema) = 'object'),
    CONSTRAINT workflows_out_schema_check CHECK (jsonb_typeof(out_schema) = 'object'),
    CONSTRAINT workflows_tags_check CHECK (array_position(tags, NULL) IS NULL),
    CONSTRAINT workflows_version_check CHECK (version >= 1),
    CONSTRAINT workflows_row_version_check CHECK (row_version >= 1),
    CONSTRAINT workflows_failure_mode_check CHECK (failure_mode IN ('fail_fast', 'continue')),
    CONSTRAINT workflows_max_running_executions_check CHECK (max_running_executions > 0),
    -- Also the index of workflows_owner_id_fkey (leading column).
    CONSTRAINT workflows_owner_id_name_key UNIQUE (owner_id, name)
);

CREATE INDEX workflows_tags_idx ON workflows USING gin (tags);
CREATE INDEX workflows_search_idx ON workflows USING gin (search);
-- The owner's dashboard: one status, most recently edited first.
CREATE INDEX workflows_owner_status_updated_idx
    ON workflows (owner_id, status, updated_at DESC, id DESC);
-- Keyset pagination over all workflows, by edit or by creation time.
CREATE INDEX workflows_updated_idx ON workflows (updated_at, id);
CREATE INDEX workflows_created_idx ON workflows (created_at, id);
-- The A-Z listing of all workflows (added by 0011, built CONCURRENTLY there).
CREATE INDEX workflows_name_idx ON workflows (name, id);
CREATE INDEX workflows_pack_id_idx ON workflows (pack_id);
CREATE INDEX workflows_status_updated_idx ON workflows (status, updated_at, id);

CREATE TRIGGER workflows_set_updated_at
    BEFORE UPDATE ON workflows
    FOR EACH ROW EXECUTE FUNCTION set_updated_at('search');

CREATE TABLE workflow_versions (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    workflow_id uuid NOT NULL,
    version integer NOT NULL,
    definition_yaml text NOT NULL,
    definition jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT workflow_versions_workflow_id_fkey FOREIGN KEY (workflow_id)
        REFERENCES workflows (id) ON DELETE CASCADE,
    CONSTRAINT workflow_versions_version_check CHECK (version >= 1),
    CONSTRAINT workflow_versions_definition_check CHECK (jsonb_typeof(definition) = 'object'),
    -- Target of workflow_executions_version_fkey; also the index of
    -- workflow_versions_workflow_id_fkey (leading column).
    CONSTRAINT workflow_versions_workflow_id_version_key UNIQUE (workflow_id, version)
);

-- Snapshots are history that executions point at: never rewritten. They go
-- away only with their workflow (DELETE is allowed for the cascade).
CREATE TRIGGER workflow_versions_immutable
    BEFORE UPDATE ON workflow_versions
    FOR EACH ROW EXECUTE FUNCTION reject_update();

-- AFTER INSERT: the snapshot references the workflow row, which a BEFORE
-- INSERT trigger would not see yet.
CREATE FUNCTION record_workflow_version() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO workflow_versions (workflow_id, version, definition_yaml, definition)
    VALUES (NEW.id, NEW.version, NEW.definition_yaml, NEW.definition);
    RETURN NULL;
END;
$$;

CREATE TRIGGER workflows_version_on_insert
    AFTER INSERT ON workflows
    FOR EACH ROW EXECUTE FUNCTION record_workflow_version();

-- version belongs to the database: a definition change, or a stage change
-- announced by snapshot_workflow_stages, bumps it and snapshots the definition
-- and the stages; any other attempt to change it is undone, so that
-- workflows.version always names an existing workflow_versions row. The
-- workflow row already exists on UPDATE, so the snapshot can be written here.
CREATE FUNCTION bump_workflow_version() RETURNS trigger
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

CREATE TRIGGER workflows_version_on_update
    BEFORE UPDATE ON workflows
    FOR EACH ROW
    WHEN (NEW.definition IS DISTINCT FROM OLD.definition
          OR NEW.definition_yaml IS DISTINCT FROM OLD.definition_yaml
          OR NEW.version IS DISTINCT FROM OLD.version)
    EXECUTE FUNCTION bump_workflow_version();

CREATE TABLE workflow_stages (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    workflow_id uuid NOT NULL,
    position integer NOT NULL,
    name text NOT NULL,
    -- Resolved against actions.ref at run time; no FK, so a workflow can be
    -- drafted before its pack is installed.
    action_ref text NOT NULL,
    -- Names of stages of the same workflow that must complete first: NULL runs
    -- the stage after the one before it by position, '{}' makes it a root.
    depends_on text[],
    config jsonb NOT NULL DEFAULT '{}',
    -- Fan-out items: one execution step per element (task_index).
    with_items jsonb,
    retry_policy jsonb NOT NULL
        DEFAULT '{"max_attempts": 3, "backoff_base_seconds": 1, "backoff_max_seconds": 300}',
    timeout_seconds integer NOT NULL DEFAULT 3600,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- The queue its steps run in (claims can ask for some queues only).
    queue text NOT NULL DEFAULT 'default',
    -- {"key": template, "limit": n}: at most n steps of one rendered key run at once. A
    -- template is text with {name} placeholders, each an execution parameter as text (a
    -- missing one renders empty).
    concurrency jsonb,
    -- {"key": template, "limit": n, "per_seconds": s}: at most n steps of one rendered key
    -- start in any s seconds.
    rate_limit jsonb,
    CONSTRAINT workflow_stages_workflow_id_fkey FOREIGN KEY (workflow_id)
        REFERENCES workflows (id) ON DELETE CASCADE,
    CONSTRAINT workflow_stages_position_check CHECK (position >= 0),
    CONSTRAINT workflow_stages_name_check CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    CONSTRAINT workflow_stages_action_ref_check CHECK (length(btrim(action_ref)) > 0),
    CONSTRAINT workflow_stages_depends_on_check
        CHECK (array_position(depends_on, NULL) IS NULL AND NOT name = ANY (depends_on)),
    CONSTRAINT workflow_stages_config_check CHECK (jsonb_typeof(config) = 'object'),
    CONSTRAINT workflow_stages_with_items_check
        CHECK (with_items IS NULL OR jsonb_typeof(with_items) = 'array'),
    -- CASE, not AND: the cast must not run (and fail with a cast error
    -- instead of this constraint) when max_attempts is missing or not a number.
    CONSTRAINT workflow_stages_retry_policy_check CHECK (
        CASE jsonb_typeof(retry_policy -> 'max_attempts')
            WHEN 'number' THEN (retry_policy ->> 'max_attempts')::numeric >= 1
                AND (retry_policy ->> 'max_attempts')::numeric
                    = trunc((retry_policy ->> 'max_attempts')::numeric)
            ELSE false
        END
    ),
    CONSTRAINT workflow_stages_timeout_seconds_check CHECK (timeout_seconds > 0),
    CONSTRAINT workflow_stages_queue_check CHECK (queue ~ '^[a-z][a-z0-9_-]{0,62}$'),
    -- CASE, not AND: a cast or a key removal must not run (and fail) on a value of the
    -- wrong type.
    CONSTRAINT workflow_stages_concurrency_check CHECK (
        CASE WHEN concurrency IS NULL THEN true
             WHEN jsonb_typeof(concurrency) <> 'object' THEN false
             WHEN concurrency - 'key' - 'limit' <> '{}'::jsonb THEN false
             WHEN jsonb_typeof(concurrency -> 'key') IS DISTINCT FROM 'string'
                  OR jsonb_typeof(concurrency -> 'limit') IS DISTINCT FROM 'number' THEN false
             ELSE length(concurrency ->> 'key') <= 200
                  AND (concurrency ->> 'key') ~ '^([^{}]|\{[a-z_][a-z0-9_]{0,62}\})+$'
                  AND (concurrency ->> 'limit')::numeric BETWEEN 1 AND 10000
                  AND (concurrency ->> 'limit')::numeric
                      = trunc((concurrency ->> 'limit')::numeric)
        END
    ),
    CONSTRAINT workflow_stages_rate_limit_check CHECK (
        CASE WHEN rate_limit IS NULL THEN true
             WHEN jsonb_typeof(rate_limit) <> 'object' THEN false
             WHEN rate_limit - 'key' - 'limit' - 'per_seconds' <> '{}'::jsonb THEN false
             WHEN jsonb_typeof(rate_limit -> 'key') IS DISTINCT FROM 'string'
                  OR jsonb_typeof(rate_limit -> 'limit') IS DISTINCT FROM 'number'
                  OR jsonb_typeof(rate_limit -> 'per_seconds') IS DISTINCT FROM 'number'
                  THEN false
             ELSE length(rate_limit ->> 'key') <= 200
                  AND (rate_limit ->> 'key') ~ '^([^{}]|\{[a-z_][a-z0-9_]{0,62}\})+$'
                  AND (rate_limit ->> 'limit')::numeric BETWEEN 1 AND 10000
                  AND (rate_limit ->> 'limit')::numeric
                      = trunc((rate_limit ->> 'limit')::numeric)
                  AND (rate_limit ->> 'per_seconds')::numeric > 0
                  AND (rate_limit ->> 'per_seconds')::numeric <= 31622400
        END
    ),
    -- Deferrable so that a reorder can swap positions in one transaction
    -- (SET CONSTRAINTS ... DEFERRED) or renumber in a single UPDATE. Also the
    -- index of workflow_stages_workflow_id_fkey (leading column).
    CONSTRAINT workflow_stages_workflow_id_position_key UNIQUE (workflow_id, position)
        DEFERRABLE INITIALLY IMMEDIATE,
    CONSTRAINT workflow_stages_workflow_id_name_key UNIQUE (workflow_id, name)
);

CREATE TRIGGER workflow_stages_set_updated_at
    BEFORE UPDATE ON workflow_stages
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

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
    queue text NOT NULL DEFAULT 'default',
    concurrency jsonb,
    rate_limit jsonb,
    CONSTRAINT workflow_version_stages_version_fkey FOREIGN KEY (workflow_id, version)
        REFERENCES workflow_versions (workflow_id, version) ON DELETE CASCADE,
    -- Also the index of workflow_version_stages_version_fkey (leading columns).
    CONSTRAINT workflow_version_stages_name_key UNIQUE (workflow_id, version, name)
);

CREATE TRIGGER workflow_version_stages_immutable
    BEFORE UPDATE ON workflow_version_stages
    FOR EACH ROW EXECUTE FUNCTION reject_update();

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

-- ============================================================================
-- Catalog: actions
-- ============================================================================

CREATE TABLE actions (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    pack_id uuid NOT NULL,
    -- "<pack ref>.<action>"; the pack part is not checked against pack_id.
    ref text NOT NULL,
    entrypoint text NOT NULL,
    description text NOT NULL DEFAULT '',
    param_schema jsonb NOT NULL DEFAULT '{}',
    out_schema jsonb NOT NULL DEFAULT '{}',
    is_workflow boolean NOT NULL DEFAULT false,
    workflow_id uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT actions_pack_id_fkey FOREIGN KEY (pack_id)
        REFERENCES packs (id) ON DELETE CASCADE,
    -- RESTRICT, not SET NULL: nulling workflow_id would break
    -- actions_workflow_link_check. A workflow that implements an action is
    -- deleted only after the action is removed (or relinked).
    CONSTRAINT actions_workflow_id_fkey FOREIGN KEY (workflow_id)
        REFERENCES workflows (id) ON DELETE RESTRICT,
    CONSTRAINT actions_ref_check CHECK (ref ~ '^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$'),
    CONSTRAINT actions_entrypoint_check CHECK (length(btrim(entrypoint)) > 0),
    CONSTRAINT actions_param_schema_check CHECK (jsonb_typeof(param_schema) = 'object'),
    CONSTRAINT actions_out_schema_check CHECK (jsonb_typeof(out_schema) = 'object'),
    CONSTRAINT actions_workflow_link_check CHECK (is_workflow = (workflow_id IS NOT NULL)),
    CONSTRAINT actions_ref_key UNIQUE (ref)
);

CREATE INDEX actions_pack_id_idx ON actions (pack_id);
CREATE INDEX actions_workflow_id_idx ON actions (workflow_id);

CREATE TRIGGER actions_set_updated_at
    BEFORE UPDATE ON actions
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ============================================================================
-- Agents: sessions, configurations
-- ============================================================================

CREATE TABLE sessions (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    client_id text NOT NULL,
    user_id uuid,
    is_active boolean NOT NULL DEFAULT true,
    -- Stale-session cleanup deactivates active sessions whose heartbeat is old.
    last_heartbeat timestamptz NOT NULL DEFAULT now(),
    metadata jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sessions_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT sessions_client_id_check CHECK (length(btrim(client_id)) > 0),
    CONSTRAINT sessions_metadata_check CHECK (jsonb_typeof(metadata) = 'object'),
    CONSTRAINT sessions_client_id_key UNIQUE (client_id)
);

CREATE INDEX sessions_user_id_idx ON sessions (user_id);
-- The stale-session sweep: active sessions by heartbeat age.
CREATE INDEX sessions_active_heartbeat_idx ON sessions (last_heartbeat) WHERE is_active;
-- Keyset pagination over active sessions.
CREATE INDEX sessions_active_created_idx ON sessions (created_at, id) WHERE is_active;

CREATE TRIGGER sessions_set_updated_at
    BEFORE UPDATE ON sessions
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Compare-and-set writes go through version: UPDATE ... WHERE version = expected.
CREATE TABLE configurations (
    key text PRIMARY KEY,
    value jsonb NOT NULL,
    version integer NOT NULL DEFAULT 1,
    description text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- Dotted lowercase path: "scheduler.max_workers".
    CONSTRAINT configurations_key_check
        CHECK (key ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$'),
    CONSTRAINT configurations_version_check CHECK (version >= 1)
);

-- Prefix listings (key LIKE 'scheduler.%') whatever the database collation;
-- the primary key serves them only under the C collation.
CREATE INDEX configurations_key_pattern_idx ON configurations (key text_pattern_ops);

CREATE TRIGGER configurations_set_updated_at
    BEFORE UPDATE ON configurations
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ============================================================================
-- Runs: executions, steps, attempts, logs, tool calls
-- ============================================================================

CREATE TABLE workflow_executions (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    workflow_id uuid NOT NULL,
    -- The exact definition this execution runs (workflow_versions.version).
    workflow_version integer NOT NULL,
    -- Set for sub-workflow executions; they go away with their parent.
    parent_execution_id uuid,
    triggered_by uuid,
    status text NOT NULL DEFAULT 'pending',
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
    row_version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- Pinned from the workflow at start.
    failure_mode text NOT NULL DEFAULT 'fail_fast',
    -- The step of the parent execution that started this one and waits for it
    -- (its FK is added after execution_steps, below).
    parent_step_id uuid,
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
    CONSTRAINT workflow_executions_failure_mode_check
        CHECK (failure_mode IN ('fail_fast', 'continue')),
    -- A step of the parent execution waits for this one (see parent_step_id).
    CONSTRAINT workflow_executions_parent_step_check
        CHECK (parent_step_id IS NULL OR parent_execution_id IS NOT NULL),
    CONSTRAINT workflow_executions_idempotency_key UNIQUE (workflow_id, idempotency_key)
);

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
-- Children by the parent step waiting for them (added by 0014, built
-- CONCURRENTLY there); also the index of workflow_executions_parent_step_id_fkey.
CREATE INDEX workflow_executions_parent_step_idx ON workflow_executions (parent_step_id)
    WHERE parent_step_id IS NOT NULL;
-- Executions a user started (the engine's own starts have none): the index of
-- workflow_executions_triggered_by_fkey, whose lookup (triggered_by = $1) implies
-- IS NOT NULL. Added by 0026, built CONCURRENTLY there.
CREATE INDEX workflow_executions_triggered_by_user_idx ON workflow_executions (triggered_by)
    WHERE triggered_by IS NOT NULL;
CREATE INDEX workflow_executions_paused_idx ON workflow_executions (updated_at)
    WHERE status = 'paused';
-- Retention: finished executions oldest first.
CREATE INDEX workflow_executions_finished_idx ON workflow_executions (finished_at)
    WHERE finished_at IS NOT NULL;

CREATE TRIGGER workflow_executions_set_updated_at
    BEFORE UPDATE ON workflow_executions
    FOR EACH ROW
    -- Not called when the statement wrote updated_at = now() itself (the engine's hot
    -- statements do): the result is the same, without a PL/pgSQL call per row.
    WHEN (NEW.updated_at IS DISTINCT FROM now() AND NEW IS DISTINCT FROM OLD)
    EXECUTE FUNCTION set_updated_at();

-- Legal status changes of an execution; anything else is refused like a CHECK.
-- Terminal states never change, except that a failed execution runs again
-- when it is retried, which counts a new attempt (pending while its capped
-- workflow has no free slot).
CREATE FUNCTION check_execution_transition() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    -- Called by workflow_executions_status_transition for illegal changes only (its WHEN
    -- holds the legal ones).
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
    WHEN (NEW.status IS DISTINCT FROM OLD.status
          AND NOT coalesce(CASE OLD.status
              WHEN 'pending' THEN NEW.status IN ('running', 'cancelled', 'failed')
              WHEN 'running' THEN NEW.status IN ('paused', 'completed', 'failed', 'cancelled')
              WHEN 'paused' THEN NEW.status IN ('running', 'cancelled', 'failed')
              WHEN 'failed' THEN NEW.status IN ('running', 'pending')
                                 AND NEW.attempt = OLD.attempt + 1
              ELSE false
          END, false))
    EXECUTE FUNCTION check_execution_transition();

-- The hot, narrow row of one task in one execution: claimed, leased,
-- heartbeaten and retried in place. History goes to step_attempts/step_logs.
CREATE TABLE execution_steps (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    execution_id uuid NOT NULL,
    stage_id uuid,
    task_name text NOT NULL,
    -- Position in a with_items fan-out; 0 for a plain task.
    task_index integer NOT NULL DEFAULT 0,
    status text NOT NULL DEFAULT 'pending',
    -- Lower runs first (claim order: priority, available_at, id).
    priority smallint NOT NULL DEFAULT 0,
    -- Attempts started so far.
    attempt integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 3,
    -- Earliest claim time: now() when queued, the backoff deadline on retry.
    available_at timestamptz NOT NULL DEFAULT now(),
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
    -- The stage snapshot (of the version its execution pinned) it runs.
    version_stage_id uuid,
    -- Steps it depends on not yet completed; a pending step is queued at 0.
    deps_remaining integer NOT NULL DEFAULT 0,
    -- The queue of its stage snapshot: claims can ask for some queues only.
    queue text NOT NULL DEFAULT 'default',
    -- The signal it waits for (status waiting) or last waited for.
    signal_name text,
    -- While it waits for signal_name: when it is woken without one (NULL: never).
    signal_deadline timestamptz,
    -- The signal that woke it (its payload is an input of the next claims); NULL when
    -- none did (never waited, or woken by the deadline).
    signal_id uuid,
    -- Its concurrency key as rendered at start, with the limit of its stage snapshot.
    concurrency_key text,
    -- squawk-ignore prefer-bigint-over-int -- bounded: 1..10000
    concurrency_limit integer,
    -- Its rate-limit key as rendered at start: at most rate_limit starts per rate_window.
    rate_key text,
    -- squawk-ignore prefer-bigint-over-int -- bounded: 1..10000
    rate_limit integer,
    rate_window interval,
    CONSTRAINT execution_steps_execution_id_fkey FOREIGN KEY (execution_id)
        REFERENCES workflow_executions (id) ON DELETE CASCADE,
    CONSTRAINT execution_steps_stage_id_fkey FOREIGN KEY (stage_id)
        REFERENCES workflow_stages (id) ON DELETE SET NULL,
    CONSTRAINT execution_steps_task_name_check CHECK (length(btrim(task_name)) > 0),
    CONSTRAINT execution_steps_task_index_check CHECK (task_index >= 0),
    CONSTRAINT execution_steps_version_stage_id_fkey FOREIGN KEY (version_stage_id)
        REFERENCES workflow_version_stages (id),
    -- waiting: a step that started a child execution waits for it.
    CONSTRAINT execution_steps_status_check CHECK (
        status IN ('pending', 'queued', 'running', 'waiting', 'completed', 'failed', 'skipped',
                   'cancelled', 'timed_out')
    ),
    CONSTRAINT execution_steps_deps_remaining_check CHECK (deps_remaining >= 0),
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
    CONSTRAINT execution_steps_queue_check CHECK (queue ~ '^[a-z][a-z0-9_-]{0,62}$'),
    CONSTRAINT execution_steps_concurrency_check CHECK (
        (concurrency_key IS NULL) = (concurrency_limit IS NULL)
        AND concurrency_limit BETWEEN 1 AND 10000
    ),
    CONSTRAINT execution_steps_rate_limit_check CHECK (
        (rate_key IS NULL) = (rate_limit IS NULL) AND (rate_key IS NULL) = (rate_window IS NULL)
        AND rate_limit BETWEEN 1 AND 10000 AND rate_window > interval '0'
    ),
    -- Also the index of execution_steps_execution_id_fkey (leading column).
    CONSTRAINT execution_steps_execution_task_key UNIQUE (execution_id, task_name, task_index)
);

-- The claim query polls exactly this: queued steps of one queue in claim order (added by
-- 0021, built CONCURRENTLY there).
CREATE INDEX execution_steps_queue_claim_idx
    ON execution_steps (queue, priority, available_at, id)
    WHERE status = 'queued';
-- The reaper: running steps whose lease has expired.
CREATE INDEX execution_steps_lease_expiry_idx ON execution_steps (lease_expires_at)
    WHERE status = 'running';
-- Steps waiting out a retry backoff.
CREATE INDEX execution_steps_retry_idx ON execution_steps (available_at)
    WHERE status = 'queued' AND attempt > 0;
CREATE INDEX execution_steps_stage_id_idx ON execution_steps (stage_id);
-- The index of execution_steps_version_stage_id_fkey (added by 0013, built
-- CONCURRENTLY there).
CREATE INDEX execution_steps_version_stage_id_idx ON execution_steps (version_stage_id);
-- Timeouts: running steps by start time (started_at + timeout_seconds).
CREATE INDEX execution_steps_running_started_idx ON execution_steps (started_at)
    WHERE status = 'running';
-- The reaper: steps waiting for a signal with a deadline (added by 0021, built
-- CONCURRENTLY there).
CREATE INDEX execution_steps_signal_deadline_idx ON execution_steps (signal_deadline)
    WHERE status = 'waiting';

CREATE TRIGGER execution_steps_set_updated_at
    BEFORE UPDATE ON execution_steps
    FOR EACH ROW
    -- Not called when the statement wrote updated_at = now() itself (the engine's hot
    -- statements do): the result is the same, without a PL/pgSQL call per row.
    WHEN (NEW.updated_at IS DISTINCT FROM now() AND NEW IS DISTINCT FROM OLD)
    EXECUTE FUNCTION set_updated_at();

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

-- Legal status changes of a step. running -> queued is a retry, a lost lease
-- being requeued or a sleep; running -> waiting starts a child execution or
-- waits for a signal, and waiting -> queued is that signal (or its timeout)
-- arriving; a pending step is skipped when something it depends on failed. completed is final; failed,
-- timed_out, skipped and cancelled go back to pending or queued only when
-- their execution is retried.
CREATE FUNCTION check_step_transition() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    -- Called by execution_steps_status_transition for illegal changes only (its WHEN
    -- holds the legal ones).
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
    WHEN (NEW.status IS DISTINCT FROM OLD.status
          AND NOT coalesce(CASE OLD.status
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
          END, false))
    EXECUTE FUNCTION check_step_transition();

-- Executions and steps reference each other: this key waits for both tables.
ALTER TABLE workflow_executions ADD CONSTRAINT workflow_executions_parent_step_id_fkey
    FOREIGN KEY (parent_step_id) REFERENCES execution_steps (id) ON DELETE CASCADE;

-- One row per attempt, written when the attempt starts and finished once.
-- execution_id is the step's, copied by the claim that opens the attempt (no key of its
-- own since 0025: the attempt goes with its step, which goes with its execution).
CREATE TABLE step_attempts (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    step_id uuid NOT NULL,
    execution_id uuid NOT NULL,
    attempt integer NOT NULL,
    worker_id text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    outcome text,
    error text,
    CONSTRAINT step_attempts_step_id_fkey FOREIGN KEY (step_id)
        REFERENCES execution_steps (id) ON DELETE CASCADE,
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

-- An open attempt may only be finished (finished_at, outcome, error); a
-- finished one never changes again.
CREATE FUNCTION check_step_attempt_write_once() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    -- Called by step_attempts_write_once for refused writes only (its WHEN holds the rule).
    IF OLD.finished_at IS NOT NULL THEN
        RAISE EXCEPTION 'step_attempts row is write-once: attempt % of step % is already finished',
                        OLD.attempt, OLD.step_id
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = TG_NAME,
                  SCHEMA = TG_TABLE_SCHEMA,
                  TABLE = TG_TABLE_NAME;
    END IF;
    RAISE EXCEPTION 'step_attempts row is write-once: an open attempt can only be finished'
        USING ERRCODE = 'check_violation',
              CONSTRAINT = TG_NAME,
              SCHEMA = TG_TABLE_SCHEMA,
              TABLE = TG_TABLE_NAME;
END;
$$;

CREATE TRIGGER step_attempts_write_once
    BEFORE UPDATE ON step_attempts
    FOR EACH ROW
    WHEN (NEW IS DISTINCT FROM OLD
          AND (OLD.finished_at IS NOT NULL
               OR (NEW.id, NEW.step_id, NEW.execution_id, NEW.attempt, NEW.worker_id,
                   NEW.started_at)
                  IS DISTINCT FROM
                  (OLD.id, OLD.step_id, OLD.execution_id, OLD.attempt, OLD.worker_id,
                   OLD.started_at)))
    EXECUTE FUNCTION check_step_attempt_write_once();

-- Append-only log lines, bulk-written with COPY, one partition per UTC month
-- (step_logs_YYYY_MM) plus step_logs_default for lines of a month that has none, so an
-- append never fails. Retention drops a month's partition whole
-- (db.step_logs.drop_partitions, `flowledger maintain`); db.step_logs.ensure_partitions
-- makes the months ahead. A partitioned table's unique keys must hold the partition key,
-- hence (id, logged_at); the bigint identity still numbers the lines, keeps rows narrow
-- and lets COPY omit the key. Nothing refers to step_logs.
CREATE TABLE step_logs (
    id bigint GENERATED BY DEFAULT AS IDENTITY,
    step_id uuid NOT NULL,
    execution_id uuid NOT NULL,
    level text NOT NULL DEFAULT 'info',
    message text NOT NULL,
    fields jsonb NOT NULL DEFAULT '{}',
    logged_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT step_logs_pkey PRIMARY KEY (id, logged_at),
    CONSTRAINT step_logs_step_id_fkey FOREIGN KEY (step_id)
        REFERENCES execution_steps (id) ON DELETE CASCADE,
    CONSTRAINT step_logs_execution_id_fkey FOREIGN KEY (execution_id)
        REFERENCES workflow_executions (id) ON DELETE CASCADE,
    CONSTRAINT step_logs_level_check CHECK (level IN ('debug', 'info', 'warning', 'error')),
    CONSTRAINT step_logs_fields_check CHECK (jsonb_typeof(fields) = 'object')
) PARTITION BY RANGE (logged_at);

CREATE TABLE step_logs_default PARTITION OF step_logs DEFAULT;

-- Partitioned indexes: each partition gets its own, made with it.
-- Also the index of step_logs_step_id_fkey (leading column).
CREATE INDEX step_logs_step_idx ON step_logs (step_id, logged_at, id);
-- Also the index of step_logs_execution_id_fkey (leading column).
CREATE INDEX step_logs_execution_idx ON step_logs (execution_id, logged_at, id);
-- Finds one month's lines in the default partition when that month's partition is made.
CREATE INDEX step_logs_logged_at_idx ON step_logs USING brin (logged_at);

-- This month's partition and the next three's, as the migration makes them on an empty
-- table (and db.step_logs.ensure_partitions() keeps ahead).
DO $$
DECLARE
    month timestamp;
BEGIN
    FOR month IN
        SELECT date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => ahead)
          FROM generate_series(0, 3) AS ahead
    LOOP
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF step_logs FOR VALUES FROM (%L) TO (%L)',
            'step_logs_' || to_char(month, 'YYYY_MM'),
            month AT TIME ZONE 'UTC',
            (month + interval '1 month') AT TIME ZONE 'UTC'
        );
    END LOOP;
END;
$$;

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

CREATE INDEX tool_executions_step_id_idx ON tool_executions (step_id);
CREATE INDEX tool_executions_session_id_idx ON tool_executions (session_id);
CREATE INDEX tool_executions_tool_status_created_idx
    ON tool_executions (tool_name, status, created_at);
CREATE INDEX tool_executions_created_idx ON tool_executions (created_at);

CREATE TRIGGER tool_executions_set_updated_at
    BEFORE UPDATE ON tool_executions
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ============================================================================
-- Events: the transactional outbox
-- ============================================================================

CREATE TABLE outbox (
    -- Written in the same transaction as the change it announces; a relay
    -- drains it with FOR UPDATE SKIP LOCKED. No updated_at: a row changes
    -- only when the relay records an attempt or marks it published, and
    -- available_at / published_at already say when.
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    aggregate_type text NOT NULL,
    aggregate_id uuid NOT NULL,
    event_type text NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Next delivery attempt; pushed back after a failed publish.
    available_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    CONSTRAINT outbox_aggregate_type_check CHECK (length(btrim(aggregate_type)) > 0),
    -- "<aggregate>.<event>", e.g. "execution.completed".
    CONSTRAINT outbox_event_type_check CHECK (event_type ~ '^[a-z_]+\.[a-z_]+$'),
    CONSTRAINT outbox_payload_check CHECK (jsonb_typeof(payload) = 'object'),
    CONSTRAINT outbox_attempts_check CHECK (attempts >= 0)
);

-- What the relay polls: unpublished events that are due, oldest first.
CREATE INDEX outbox_unpublished_idx ON outbox (available_at, id) WHERE published_at IS NULL;
-- Retention: published events oldest first.
CREATE INDEX outbox_published_idx ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX outbox_aggregate_idx ON outbox (aggregate_type, aggregate_id);

-- ============================================================================
-- Memory: items, context modules, context packs
-- ============================================================================

CREATE TABLE memory_items (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    project text NOT NULL,
    kind text NOT NULL,
    content text NOT NULL,
    -- SHA-256 of the normalised content, computed by the application; the
    -- dedupe key within a project.
    content_hash bytea NOT NULL,
    confidence double precision NOT NULL DEFAULT 0.5,
    status text NOT NULL DEFAULT 'candidate',
    -- Where the item came from (source, author, commit...).
    provenance jsonb NOT NULL DEFAULT '{}',
    -- Paths, symbols or topics the item is about.
    anchors text[] NOT NULL DEFAULT '{}',
    access_count integer NOT NULL DEFAULT 0,
    last_accessed_at timestamptz,
    expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT memory_items_project_check CHECK (length(btrim(project)) > 0),
    CONSTRAINT memory_items_kind_check
        CHECK (kind IN ('decision', 'constraint', 'gotcha', 'style_rule', 'learning')),
    CONSTRAINT memory_items_content_check CHECK (length(btrim(content)) > 0),
    CONSTRAINT memory_items_content_hash_check CHECK (octet_length(content_hash) = 32),
    CONSTRAINT memory_items_confidence_check CHECK (confidence BETWEEN 0 AND 1),
    CONSTRAINT memory_items_status_check
        CHECK (status IN ('candidate', 'active', 'stable', 'deprecated')),
    CONSTRAINT memory_items_provenance_check CHECK (jsonb_typeof(provenance) = 'object'),
    CONSTRAINT memory_items_anchors_check CHECK (array_position(anchors, NULL) IS NULL),
    CONSTRAINT memory_items_access_count_check CHECK (access_count >= 0),
    CONSTRAINT memory_items_project_content_hash_key UNIQUE (project, content_hash)
);

-- Recall: one project's items of a status, most trusted first.
CREATE INDEX memory_items_project_status_confidence_idx
    ON memory_items (project, status, confidence DESC, created_at DESC, id DESC);
CREATE INDEX memory_items_anchors_idx ON memory_items USING gin (anchors);
-- Expiry sweep.
CREATE INDEX memory_items_expires_idx ON memory_items (expires_at)
    WHERE expires_at IS NOT NULL;

CREATE TRIGGER memory_items_set_updated_at
    BEFORE UPDATE ON memory_items
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Lifecycle of a memory item: candidate -> active -> stable, and any of them
-- -> deprecated, which is final.
CREATE FUNCTION check_memory_item_transition() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    -- Parenthesised: PL/pgSQL ends an IF condition at the first bare THEN.
    IF (CASE OLD.status
            WHEN 'candidate' THEN NEW.status IN ('active', 'deprecated')
            WHEN 'active' THEN NEW.status IN ('stable', 'deprecated')
            WHEN 'stable' THEN NEW.status = 'deprecated'
            ELSE false
        END) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'illegal memory_items status transition: % -> %',
                    OLD.status, NEW.status
        USING ERRCODE = 'check_violation',
              CONSTRAINT = TG_NAME,
              SCHEMA = TG_TABLE_SCHEMA,
              TABLE = TG_TABLE_NAME,
              COLUMN = 'status';
END;
$$;

CREATE TRIGGER memory_items_status_transition
    BEFORE UPDATE OF status ON memory_items
    FOR EACH ROW
    WHEN (NEW.status IS DISTINCT FROM OLD.status)
    EXECUTE FUNCTION check_memory_item_transition();

-- A named, prioritised selection of one project's memory.
CREATE TABLE memory_context_modules (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    project text NOT NULL,
    name text NOT NULL,
    description text NOT NULL DEFAULT '',
    -- Rules that pick items (kinds, anchors, minimum confidence...).
    selectors jsonb NOT NULL DEFAULT '{}',
    priority integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT memory_context_modules_project_check CHECK (length(btrim(project)) > 0),
    CONSTRAINT memory_context_modules_name_check CHECK (length(btrim(name)) > 0),
    CONSTRAINT memory_context_modules_selectors_check
        CHECK (jsonb_typeof(selectors) = 'object'),
    CONSTRAINT memory_context_modules_project_name_key UNIQUE (project, name)
);

CREATE TRIGGER memory_context_modules_set_updated_at
    BEFORE UPDATE ON memory_context_modules
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Ordered membership of items in a module. A link row whose only mutable
-- column is position, so it carries no updated_at.
CREATE TABLE memory_module_items (
    module_id uuid NOT NULL,
    item_id uuid NOT NULL,
    position integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Also the index of memory_module_items_module_id_fkey (leading column).
    CONSTRAINT memory_module_items_pkey PRIMARY KEY (module_id, item_id),
    CONSTRAINT memory_module_items_module_id_fkey FOREIGN KEY (module_id)
        REFERENCES memory_context_modules (id) ON DELETE CASCADE,
    CONSTRAINT memory_module_items_item_id_fkey FOREIGN KEY (item_id)
        REFERENCES memory_items (id) ON DELETE CASCADE,
    CONSTRAINT memory_module_items_position_check CHECK (position >= 0),
    -- Deferrable so that a reorder can swap positions in one transaction.
    CONSTRAINT memory_module_items_module_id_position_key UNIQUE (module_id, position)
        DEFERRABLE INITIALLY IMMEDIATE
);

CREATE INDEX memory_module_items_item_id_idx ON memory_module_items (item_id);

-- A generated bundle of modules/items that fits a token budget; kept as a
-- record of what was handed out, so never rewritten.
CREATE TABLE memory_context_packs (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    project text NOT NULL,
    token_budget integer NOT NULL,
    token_count integer NOT NULL,
    -- The modules the pack was built from (no FK: the pack outlives them).
    module_ids uuid[] NOT NULL,
    -- The selected items as handed out, in order.
    items jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT memory_context_packs_project_check CHECK (length(btrim(project)) > 0),
    CONSTRAINT memory_context_packs_token_budget_check CHECK (token_budget > 0),
    CONSTRAINT memory_context_packs_token_count_check
        CHECK (token_count >= 0 AND token_count <= token_budget),
    CONSTRAINT memory_context_packs_module_ids_check
        CHECK (array_position(module_ids, NULL) IS NULL),
    CONSTRAINT memory_context_packs_items_check CHECK (jsonb_typeof(items) = 'array')
);

CREATE INDEX memory_context_packs_project_created_idx
    ON memory_context_packs (project, created_at DESC, id DESC);

CREATE TRIGGER memory_context_packs_immutable
    BEFORE UPDATE ON memory_context_packs
    FOR EACH ROW EXECUTE FUNCTION reject_update();

-- The key that signs pagination cursors (unless the cursor_secret setting overrides it):
-- one row of 32 bytes from the server's strong random source (gen_random_uuid()).
CREATE TABLE cursor_key (
    singleton boolean PRIMARY KEY DEFAULT true,
    key bytea NOT NULL DEFAULT decode(
        replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'
    ),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT cursor_key_singleton_check CHECK (singleton),
    CONSTRAINT cursor_key_key_check CHECK (octet_length(key) >= 32)
);

-- ============================================================================
-- Tasks: planning and work items, attached to workflows in order
-- ============================================================================

CREATE TABLE tasks (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    title text NOT NULL,
    description text NOT NULL DEFAULT '',
    task_type text NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    config jsonb NOT NULL DEFAULT '{}',
    metadata jsonb NOT NULL DEFAULT '{}',
    -- Where the work happens (a checkout, a directory); NULL when it has no place.
    workspace_path text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tasks_title_check CHECK (length(btrim(title)) > 0 AND length(title) <= 255),
    CONSTRAINT tasks_description_check CHECK (length(description) <= 1000000),
    CONSTRAINT tasks_task_type_check CHECK (task_type ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    CONSTRAINT tasks_status_check
        CHECK (status IN ('pending', 'in_progress', 'done', 'cancelled')),
    CONSTRAINT tasks_config_check CHECK (jsonb_typeof(config) = 'object'),
    CONSTRAINT tasks_metadata_check CHECK (jsonb_typeof(metadata) = 'object'),
    -- 512 characters of at most 4 bytes each fit a btree entry.
    CONSTRAINT tasks_workspace_path_check
        CHECK (length(btrim(workspace_path)) > 0 AND length(workspace_path) <= 512)
);

-- Each listing pages newest first on (created_at, id) within its filter.
CREATE INDEX tasks_created_idx ON tasks (created_at, id);
CREATE INDEX tasks_status_created_idx ON tasks (status, created_at, id);
CREATE INDEX tasks_task_type_created_idx ON tasks (task_type, created_at, id);
CREATE INDEX tasks_workspace_created_idx ON tasks (workspace_path, created_at, id)
    WHERE workspace_path IS NOT NULL;

CREATE TRIGGER tasks_set_updated_at
    BEFORE UPDATE ON tasks
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- The tasks attached to a workflow, in order (sequence: unique per workflow).
CREATE TABLE workflow_tasks (
    workflow_id uuid NOT NULL,
    task_id uuid NOT NULL,
    sequence integer NOT NULL,
    config jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- Also the index of workflow_tasks_workflow_id_fkey (leading column).
    CONSTRAINT workflow_tasks_pkey PRIMARY KEY (workflow_id, task_id),
    CONSTRAINT workflow_tasks_workflow_id_fkey FOREIGN KEY (workflow_id)
        REFERENCES workflows (id) ON DELETE CASCADE,
    CONSTRAINT workflow_tasks_task_id_fkey FOREIGN KEY (task_id)
        REFERENCES tasks (id) ON DELETE CASCADE,
    CONSTRAINT workflow_tasks_sequence_check CHECK (sequence >= 0),
    CONSTRAINT workflow_tasks_config_check CHECK (jsonb_typeof(config) = 'object'),
    -- Deferrable so that a reorder can renumber every task in one UPDATE.
    CONSTRAINT workflow_tasks_workflow_id_sequence_key UNIQUE (workflow_id, sequence)
        DEFERRABLE INITIALLY IMMEDIATE
);

-- The index of workflow_tasks_task_id_fkey: deleting a task finds its links.
CREATE INDEX workflow_tasks_task_id_idx ON workflow_tasks (task_id);

CREATE TRIGGER workflow_tasks_set_updated_at
    BEFORE UPDATE ON workflow_tasks
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ============================================================================
-- Schedules: when scheduled workflows fire
-- ============================================================================

-- One row per workflow whose trigger_type is 'schedule', kept by the triggers below. The
-- cron rule itself stays in workflows.schedule; the scheduler (db.schedules.fire_due)
-- computes next_fire_at from it, since SQL cannot evaluate cron.
CREATE TABLE workflow_schedules (
    workflow_id uuid PRIMARY KEY,
    -- Missed ticks: 'latest' fires only the most recent one, 'all' every one of them, at
    -- most max_catch_up (the most recent).
    catch_up text NOT NULL DEFAULT 'latest',
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

-- ============================================================================
-- Running-execution caps: workflows.max_running_executions
-- ============================================================================

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
